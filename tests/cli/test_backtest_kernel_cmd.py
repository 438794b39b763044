"""`sapphire backtest` on a system config: the kernel in one process, rows in the store, one
clear line for each bad input."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.cli import main
from sapphire.data.sample import sample_paths
from sapphire.storage.query import read_table
from tests.conftest import REPO_ROOT


def write_config(tmp_path: Path, **data: Any) -> Path:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {**raw["data"], "max_events": 6_000, **data}
    raw["storage"] = {"root": str(tmp_path / "runs")}
    path = tmp_path / "demo.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def test_a_system_config_runs_in_process_and_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["backtest", "--config", str(config), "--run-id", "bt-1", "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "window 20 ms (exact)" in out
    assert "entry 20 ms, response 20 ms" in out
    assert "next: sapphire query bt-1" in out
    # quantities in BTC (lot 0.001), not in lots: "position 5" read as 5 BTC
    assert "Agents (position and traded in BTC)" in out
    # the spot sample's recorder ran 1.27 s behind Binance: its quotes were moved by that
    assert "recorder clock behind the exchange's" in out and "2024-08-08 1,270." in out
    ticks = read_table(tmp_path / "runs" / "store", "ticks", "bt-1").collect()
    assert ticks.height > 500


@pytest.mark.parametrize(
    ("data", "run_id", "message"),
    [
        ({"window_ns": 20_000_001}, "bt-2", "longer than the lookahead"),
        ({}, "../escape", "run id '../escape'"),
        (
            {
                "files": ["/nonexistent.csv.gz"],
                "source": "files",
                "instrument_files": ["sample:instrument.json"],
            },
            "bt-3",
            "nonexistent",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: dict[str, Any],
    run_id: str,
    message: str,
) -> None:
    config = write_config(tmp_path, **data)
    code = main(["backtest", "--config", str(config), "--run-id", run_id, "--no-progress"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert message in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("capital_quote", "abc", "capital_quote"),
        ("capital_quote", "-5", "capital_quote"),
        ("capital_quote", "0", "capital_quote must be > 0"),
        ("data", {"source": "sample", "max_events": -100}, "max_events"),
        ("data", {"source": "sample", "start_ns": 10, "end_ns": 5}, "end_ns"),
        ("run_id", "a/b", "run_id"),
        ("storage", {"root": "README.md"}, "is not a folder"),
        ("storage", {"root": "README.md/runs"}, "is not a folder"),
    ],
)
def test_broken_configs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any, message: str
) -> None:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw[field] = value
    if field == "storage":  # a path that is a file, not a folder
        raw["storage"] = {"root": str(REPO_ROOT / value["root"])}
    path = tmp_path / "bad.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(path), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at its width
    assert message in out and "Traceback" not in out
    assert str(path) in out  # the error names the file


@pytest.mark.parametrize("key", ["shards", "metrics", "capital_quote", "checkpoint_dir"])
def test_any_system_only_key_makes_a_system_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    # a file naming only keys the old hand list lacked was read as a bar config and told
    # "unknown field" about a field the system config has, instead of what is wrong with it
    path = tmp_path / "partial.yaml"
    path.write_text(f"{key}: [1, 2]\n", encoding="utf-8")
    assert main(["backtest", "--config", str(path), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"$.{key}" in out and "unknown field" not in out and "backtest config" not in out


def test_no_events_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "the configured data produced no market events" named no cause: a session label no
    # file holds, an instrument of another symbol (every row unknown_symbol), a header only
    config = write_config(tmp_path, sessions=["2099-01-01"])
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "no market events" in out and "data.sessions found in no file: ['2099-01-01']" in out
    header_only = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv"
    with gzip.open(sample_paths().trades, "rt") as whole:
        header_only.write_text(whole.readline())
    config = write_config(
        tmp_path,
        source="files",
        files=[str(header_only)],
        instrument_files=[str(sample_paths().instrument)],
    )
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    # a file with no rows is that file's error, named (it read as "no market events")
    assert f"{header_only}: no rows (nothing after the CSV header)" in out
    # an end before the data's first event said "no row was rejected: the files hold none"
    config = write_config(tmp_path, end_ns=1_000_000_000)
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "data.end_ns 1970-01-01" in out and "is at or before the data's first event" in out
    assert "the files hold none" not in out


def test_an_llm_agent_config_is_refused_in_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # its requests go through the Ray agent actor's bridge to Serve: in one process nothing
    # sent them, it ran on its fallback, stored no decision and exited 0
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo_llm.yaml").read_bytes())
    raw["storage"] = {"root": str(tmp_path / "runs")}
    path = tmp_path / "llm.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(path), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "ask a language model served by Ray Serve" in out and "sapphire run" in out

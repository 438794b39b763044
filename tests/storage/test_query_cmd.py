from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sapphire.cli import query_cmd
from sapphire.storage.parquet_backend import ParquetBackend
from sapphire.storage.sink import StorageSink
from tests.storage.conftest import ticks_from_trades


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    query_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["query", *argv])
    result: int = args.handler(args)
    return result


def test_query_prints_one_runs_rows(
    tmp_path: Path, trades_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=10_000)
    sink.submit_frame("ticks", ticks_from_trades(trades_path, 30, run_id="run-a"), now_ns=0)
    sink.submit_frame(
        "ticks", ticks_from_trades(trades_path, 20, run_id="run-b", producer_id="x"), now_ns=0
    )
    sink.flush(0)
    assert (
        run_cli(
            [
                "run-a",
                "--table",
                "ticks",
                "--root",
                str(tmp_path),
                "--format",
                "csv",
                "--limit",
                "0",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 31 and lines[0].startswith("ts_ns,symbol,agent_id,run_id")
    assert all(",run-a," in line for line in lines[1:])
    # a limit that leaves rows out says so, on stderr: stdout stays the rows alone
    argv = ["run-a", "--table", "ticks", "--root", str(tmp_path), "--format", "csv"]
    assert run_cli([*argv, "--limit", "10"]) == 0
    got = capsys.readouterr()
    assert len(got.out.strip().splitlines()) == 11
    assert "the first 10 rows only; --limit 0 prints all" in got.err
    assert run_cli([*argv, "--limit", "30"]) == 0  # all of them: nothing to say
    assert capsys.readouterr().err == ""
    assert run_cli(["run-b", "--root", str(tmp_path), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"table":"ticks","rows":20' in out and '"table":"fills","rows":0' in out


def test_query_unknown_table_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["r", "--table", "trades", "--root", str(tmp_path)]) == 2
    assert "unknown table 'trades'" in capsys.readouterr().err


def test_a_wrong_root_or_an_unknown_run_exits_non_zero(
    tmp_path: Path, trades_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["r", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no store at" in capsys.readouterr().err
    sink = StorageSink(ParquetBackend(tmp_path), batch_size=10_000)
    sink.submit_frame("ticks", ticks_from_trades(trades_path, 5, run_id="real"), now_ns=0)
    sink.flush(0)
    assert run_cli(["typo", "--root", str(tmp_path)]) == 1
    assert "run 'typo' has no rows" in capsys.readouterr().err
    assert run_cli(["typo", "--table", "fills", "--root", str(tmp_path)]) == 1
    assert run_cli(["real", "--table", "fills", "--root", str(tmp_path)]) == 0  # just no fills


def test_the_runs_hint_names_the_runs_written_last(tmp_path: Path) -> None:
    """An unknown run id is answered with the latest runs: by when they were written, not
    by name (``run-...`` sorts after every ``backtest-...`` in the alphabet)."""
    import os

    from sapphire.adapters.stores import ParquetSource
    from sapphire.cli.query_cmd import runs_hint

    folder = tmp_path / "_sapphire"
    folder.mkdir()
    names = ["run-1", "backtest-1", "backtest-2", "backtest-3", "backtest-4", "backtest-5"]
    for i, name in enumerate(names):
        path = folder / f"manifest-{name}.json"
        path.write_text("{}")
        os.utime(path, ns=(i * 10**9, i * 10**9))
    hint = runs_hint(ParquetSource(tmp_path))
    assert hint == (
        "; runs there (the 5 latest of 6): backtest-1, backtest-2, backtest-3, backtest-4, "
        "backtest-5"
    )


def _store_run(root: Path, trades_path: Path, run_id: str, rows: int) -> None:
    """Rows of ``run_id`` stored as a run stores them: its sink named for it."""
    sink = StorageSink(ParquetBackend(root, sink_id=run_id), batch_size=10_000)
    sink.submit_frame("ticks", ticks_from_trades(trades_path, rows, run_id=run_id), now_ns=0)
    sink.flush(0)


def test_another_runs_damaged_file_does_not_fail_this_runs_read(
    tmp_path: Path, trades_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # run 'demo''s file pattern matched run 'demo-2''s files; and a table with no file of
    # this run was read from every run's files, a damaged one among them
    _store_run(tmp_path, trades_path, "demo", 30)
    _store_run(tmp_path, trades_path, "demo-2", 20)
    for part in tmp_path.glob("ticks/**/part-demo-2-*.parquet"):
        part.write_bytes(b"cut short")
    argv = ["demo", "--table", "ticks", "--root", str(tmp_path), "--format", "csv"]
    assert run_cli([*argv, "--limit", "0"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 31
    assert run_cli(["demo", "--root", str(tmp_path), "--format", "json"]) == 0  # all tables
    # a run with no ticks of its own (its sink's manifest says so): its ticks are empty,
    # not a scan of every run's files that fails on the damaged one
    (tmp_path / "_sapphire" / "manifest-quiet.json").write_text('{"flush_id": 0, "watermarks": {}}')
    capsys.readouterr()
    assert run_cli(["quiet", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "run 'quiet' has no rows" in err and "specification" not in err, err


def test_a_run_missing_a_committed_file_is_an_error_not_fewer_rows(
    tmp_path: Path, trades_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_run(tmp_path, trades_path, "lost", 30)
    for part in tmp_path.glob("ticks/**/part-lost-*.parquet"):
        part.unlink()  # a file deleted, a restore that missed one: the manifest says 30
    assert run_cli(["lost", "--table", "ticks", "--root", str(tmp_path), "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert "0 of the 30 rows run lost committed are readable" in err, err
    assert err.count("\n") == 1


def test_rows_committed_but_still_staged_say_where_they_wait(
    tmp_path: Path, trades_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the manifest is the commit point; the flush's files move into place after it. A run
    # that stopped in between is not "missing files": its --resume moves them
    (tmp_path / "ticks").write_text("blocks the table folder")
    sink = StorageSink(ParquetBackend(tmp_path, sink_id="stopped"), batch_size=10_000)
    frame = ticks_from_trades(trades_path, 30, run_id="stopped")
    sink.submit_frame("ticks", frame, now_ns=0)
    sink.flush(0)  # committed; the move into place failed
    (tmp_path / "ticks").unlink()
    argv = ["stopped", "--table", "ticks", "--root", str(tmp_path), "--format", "csv"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "0 of the 30 rows run stopped committed are in place; the rest wait in" in err, err


def test_a_store_error_of_several_lines_is_said_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """BigQuery's errors carry "Location" and "Job ID" lines after the message: the
    command's error stays one line (it printed five)."""

    class Refusing:
        location = "bigquery:p.d"

        def summary(self, table: str, run_id: str) -> object:
            raise RuntimeError("400 Syntax error at [1:8]\n\nLocation: US\nJob ID: abc-123\n")

    monkeypatch.setattr(query_cmd, "_source", lambda args: (Refusing(), {}))
    assert run_cli(["run-a", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["sapphire query: RuntimeError: 400 Syntax error at [1:8]"]

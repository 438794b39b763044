"""A command that did not do what it was asked says so in one line and exits non-zero: a run
id the store already holds (its rows would be dropped as duplicates and mixed into the first
run's), data that ends before the trading period, a path it cannot write."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sapphire.storage.query import read_table
from tests.cli.demo_runs import backtest, demo


def test_a_second_backtest_under_a_stored_run_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo(tmp_path)
    assert backtest(config, "once") == 0
    fills = read_table(tmp_path / "runs" / "store", "fills", "once").collect().height
    capsys.readouterr()
    assert backtest(config, "once") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "run 'once' is already stored" in out and "choose another --run-id" in out
    assert read_table(tmp_path / "runs" / "store", "fills", "once").collect().height == fills
    assert backtest(config, "twice") == 0  # another id is a run of its own


def test_a_backtest_whose_data_ends_before_its_trading_period_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # data.start_ns after every recorded event: only warm-up windows, no trading; it used to
    # print "0 events in 2 steps" and exit 0
    config = demo(tmp_path, start_ns=4_000_000_000_000_000_000)
    assert backtest(config, "late") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "no market events in the trading period" in out


def test_a_path_the_command_cannot_write_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sapphire.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["config-reference", "--out", str(blocker / "ref.md")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sapphire config-reference:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "name: x\nagent: {kind: 'indicator:EmaCross'}\nengine: vectorized\nohlcv: [a.csv]\n"
            "stake: {stake_fraction: 2}\n",
            "stake",
        ),
        ("name: x\nagent: {kind: 'indicator:EmaCross'}\nohlcv: [a.csv]\nbogus: 1\n", "bogus"),
        ("name: [unclosed\n", "not valid YAML"),
        # fields a bar backtest ignored without a word: refused, saying which one binds
        (
            "name: x\nagent: {kind: 'indicator:EmaCross'}\ninstrument: {symbol: X}\n"
            "ohlcv: [a.csv]\ninitial_cash: 50000\n",
            "stake.initial_cash",
        ),
        (
            "name: x\nagent: {kind: 'indicator:EmaCross'}\n"
            "instrument: {symbol: X, taker_fee_bps: '50'}\nohlcv: [a.csv]\n",
            "costs.fee_bps",
        ),
    ],
)
def test_a_broken_bar_backtest_config_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    from sapphire.cli import main

    config = tmp_path / "broken_bars.yaml"
    config.write_text(text)
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert str(config) in out and field in out and "Traceback" not in out


def test_a_config_that_is_not_utf8_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sapphire.cli import main

    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"name: caf\xe9\n")
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert str(config) in out and "Traceback" not in out


def test_a_ray_run_under_a_stored_run_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `sapphire run` checked only for checkpoints: under a backtest's id it ran, its rows
    # were dropped as the backtest's duplicates, and it exited 0
    from sapphire.cli import main

    config = demo(tmp_path)
    assert backtest(config, "taken") == 0
    fills = read_table(tmp_path / "runs" / "store", "fills", "taken").collect().height
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--run-id", "taken", "--no-progress"]) == 2
    screen = capsys.readouterr()
    out = " ".join((screen.out + screen.err).split())
    assert "run 'taken' is already stored" in out and "choose another run id" in out
    assert read_table(tmp_path / "runs" / "store", "fills", "taken").collect().height == fills
    import ray

    assert not ray.is_initialized()  # refused before Ray starts: none is left behind


@pytest.mark.slow
def test_a_ray_run_with_no_market_event_says_why_and_offers_no_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it said "no market events" and "continue with --resume", which finds the same data
    from sapphire.cli import main

    config = demo(tmp_path, sessions=["2099-01-01"])
    assert main(["run", "--config", str(config), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "data.sessions found in no file: ['2099-01-01']" in err and "--resume" not in err
    import ray

    assert not ray.is_initialized()


def test_a_data_file_with_no_row_to_read_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an empty CSV in data.files: the replay's DataFileError came out as a traceback, exit 1
    from sapphire.data import sample

    empty = tmp_path / "hftbacktest_binance-usdm_BTCUSDT_trades.csv"
    empty.write_text("")
    files = [str(p) for p in sample.event_files() if "trades" not in p.name] + [str(empty)]
    instruments = [str(sample.instrument_file())]
    config = demo(tmp_path, source="files", files=files, instrument_files=instruments)
    assert backtest(config, "empty") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert str(empty) in out and "no CSV header" in out and "Traceback" not in out


class _Broken:
    """An agent class whose constructor fails (a user's bug)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero in my agent")


def test_an_agent_that_fails_to_build_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = msgspec.yaml.decode(demo(tmp_path).read_bytes())
    raw["agents"] = [
        {"id": "mine", "kind": "tests.cli.test_exit_codes:_Broken", "symbol": "BTCUSDT"}
    ]
    config = tmp_path / "broken_agent.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert backtest(config, "broken") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "agent mine: ZeroDivisionError: division by zero in my agent" in out
    assert "Traceback" not in out


def test_a_data_file_listed_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it was replayed twice: its trades doubled, and the run traded on them
    from sapphire.data import sample

    files = [str(p) for p in sample.event_files()]
    instruments = [str(sample.instrument_file())]
    config = demo(tmp_path, source="files", files=[*files, files[0]], instrument_files=instruments)
    assert backtest(config, "twice") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "data.files: each file once; repeated:" in out and str(config) in out


@pytest.mark.parametrize("command", ["backtest", "tune"])
def test_a_key_given_twice_in_a_config_is_one_line_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # YAML's safe loader keeps the last: `agents: []` further down ran with no agent, exit 0
    from sapphire.cli import main

    text = demo(tmp_path).read_text()
    config = tmp_path / "twice.yaml"
    config.write_text(text + "agents: []\n")
    if command == "backtest":
        assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    else:
        assert main(["tune", "--config", str(config)]) == 2
    screen = capsys.readouterr()
    said = " ".join((screen.out + screen.err).split())
    assert str(config) in said and "key 'agents' given twice" in said


def test_a_damaged_store_file_is_named_by_query_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one file cut short broke every run and table of the store with "File out of
    # specification", naming none
    from sapphire.cli import main

    config = demo(tmp_path)
    assert backtest(config, "cut") == 0
    assert backtest(config, "other") == 0
    store = tmp_path / "runs" / "store"
    broken = sorted((store / "fills").rglob("part-cut-*.parquet"))[0]
    broken.write_bytes(broken.read_bytes()[:100])
    capsys.readouterr()
    # another run's files read as before (one damaged file failed every run's query)
    assert main(["query", "other", "--root", str(store), "--table", "fills"]) == 0
    capsys.readouterr()
    assert main(["query", "cut", "--root", str(store), "--table", "orders"]) == 2
    assert str(broken) in capsys.readouterr().err
    out = tmp_path / "report"
    assert main(["report", "cut", "--root", str(store), "--out", str(out)]) == 2
    assert str(broken) in capsys.readouterr().err


def test_the_inputs_an_agent_raised_on_are_counted_on_the_screen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # each was skipped and logged, but the end-of-run screen counted none
    raw = msgspec.yaml.decode(demo(tmp_path).read_bytes())
    raw["agents"] = [
        {"id": "raiser", "kind": "tests.actors.faulty:RaisingAgent", "symbol": "BTCUSDT"}
    ]
    config = tmp_path / "raising.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert backtest(config, "raising") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "agent errors: raiser" in out and "inputs raised, skipped" in out


def test_options_and_settings_that_would_do_nothing_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sapphire.cli import main

    config = demo(tmp_path)
    # --output-dir does nothing for a system config (it looked obeyed)
    args = ["backtest", "--config", str(config), "--no-progress", "--output-dir", str(tmp_path)]
    assert main(args) == 2
    # a mistyped balance asset: every order was refused for an empty balance, exit 0
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["exchange"]["params"]["balances"] = {"USTD": "100000", "BTC": "0"}
    typo = tmp_path / "typo.yaml"
    typo.write_bytes(msgspec.yaml.encode(raw))
    capsys.readouterr()
    assert backtest(typo, "typo") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "exchange.params.balances: USTD is no asset" in out
    # a config holding only system keys is read as one (it was "unknown field storage")
    only = tmp_path / "only_storage.yaml"
    only.write_text(f"storage: {{root: {tmp_path / 'runs'}}}\n")
    main(["backtest", "--config", str(only), "--no-progress", "--run-id", "only"])
    assert "unknown field `storage`" not in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as exit_info:  # -1 printed every row, as 0 does
        main(["query", "x", "--root", str(tmp_path), "--limit", "-1"])
    assert exit_info.value.code == 2


def test_a_venue_factory_that_refuses_its_arguments_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = msgspec.yaml.decode(demo(tmp_path).read_bytes())
    raw["exchange"]["factory"] = "os:getcwd"  # takes no arguments: a traceback before
    config = tmp_path / "factory.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert backtest(config, "factory") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "exchange.factory os:getcwd: TypeError" in out and "Traceback" not in out


def test_small_things_a_user_reads_say_what_is_true(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sapphire.cli import main
    from sapphire.data import sample

    # a folder in data.files was "no such file"
    instruments = [str(sample.instrument_file())]
    config = demo(tmp_path, source="files", files=[str(tmp_path)], instrument_files=instruments)
    assert backtest(config, "folder") == 2
    assert "a folder, not a data file" in " ".join(capsys.readouterr().out.split())
    # --check without --out printed the reference and exited 0
    assert main(["config-reference", "--check"]) == 2
    assert "--check needs --out" in capsys.readouterr().err


def test_a_run_id_another_live_process_holds_is_refused_before_the_store_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two backtests started in one second took one default id: the second's rows replaced
    # the first's, and its store recovery deleted the first's staged files
    import os
    import socket
    import subprocess
    import sys

    from sapphire.kernel.assembly import CLAIM_FILE

    config = demo(tmp_path)
    marker = tmp_path / "runs" / "busy" / CLAIM_FILE
    marker.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker.write_text(f"{socket.gethostname()} {other.pid}")
        assert os.uname().nodename == socket.gethostname()
        assert backtest(config, "busy") == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "run 'busy' is running now" in out and str(other.pid) in out
        assert not (tmp_path / "runs" / "store").exists()  # the store was never opened
    finally:
        other.kill()
        other.wait()
    assert backtest(config, "busy") == 0  # its process is gone: a crashed run's claim
    assert not marker.exists()  # released at the end


def test_a_live_config_under_sapphire_backtest_says_to_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said the paper venue refused `exchange_id` (a valid ccxt field)."""
    from sapphire.cli import main
    from tests.conftest import REPO_ROOT

    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "live_testnet.yaml").read_bytes())
    raw["storage"]["root"] = str(tmp_path / "runs")
    config = tmp_path / "live.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(config), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "trades through `sapphire run`" in out and "exchange_id" not in out


def test_a_cluster_that_cannot_be_reached_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ray retries an unreachable cluster address for ever (a warning every few seconds);
    # a start that failed on a busy host was 30 lines of Ray's traceback
    import socket

    from sapphire.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    config = demo(tmp_path)
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["ray"] = {"address": f"127.0.0.1:{port}"}
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["run", "--config", str(config), "--run-id", "nocluster", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Ray did not start" in err[0] and f"127.0.0.1:{port}" in err[0]
    assert main(["run", "--config", str(config), "--run-id", "nocluster", "--no-progress"]) == 1
    assert "is running now" not in capsys.readouterr().err  # the id's claim was released


def _damaged_sample(tmp_path: Path, how: str) -> Path:
    """The demo's data with its trades file damaged: ``cut`` (the gzip's last third gone, as
    a recorder killed mid-write leaves it) or ``flip`` (one bit of its stream changed)."""
    from sapphire.data.sample import sample_paths

    paths = sample_paths()
    raw = paths.trades.read_bytes()
    if how == "cut":
        raw = raw[: len(raw) * 2 // 3]
    else:
        at = len(raw) // 2
        raw = raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :]
    trades = tmp_path / paths.trades.name
    trades.write_bytes(raw)
    return demo(
        tmp_path,
        source="files",
        files=[str(paths.depth), str(trades), str(paths.bbo)],
        instrument_files=[str(paths.instrument)],
        max_events=None,
        # a flipped bit can turn a row's session label into garbage: the damage is the
        # subject here, not the sessions it invents
        max_session_gap_s=0,
    )


@pytest.mark.parametrize("how", ["cut", "flip"])
def test_a_run_on_a_damaged_file_names_it_and_does_not_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """A cut or corrupt gzip: the run trades on what was readable (stored, for a look), but
    the command exits 3 naming the file: it exited 0 with "truncated 1 file(s)", trading on
    a third less of the trades, or on rows a corrupt block had changed."""
    from sapphire.data.sample import sample_paths

    config = _damaged_sample(tmp_path, how)
    assert backtest(config, f"damaged-{how}") == 3
    out = capsys.readouterr().out
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: input damaged: {sample_paths().trades.name} (cut or corrupt): run "
        f"damaged-{how} used the rows before the damage only; `sapphire data inspect <file>` "
        "says where it is"
    ]
    assert "input DAMAGED" in out  # the summary's row, red
    assert read_table(tmp_path / "runs" / "store", "ticks", f"damaged-{how}").collect().height


def test_a_backtest_over_sessions_months_apart_is_refused_at_the_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path
) -> None:
    """The hftbacktest maker over 2023-04-04 and 2024-07-18 carried its position from the
    first session into the second (marked at 28,140 then 63,944: +1,413 USDT as PnL) and
    exited 0. Now the command stops at the gap, one line naming both sessions, exit 2."""
    import yaml

    from sapphire.cli import main
    from tests.conftest import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "configs" / "hftbacktest_mm.yaml").read_text())
    raw["data"].pop("start_ns", None)
    raw["data"].pop("end_ns", None)
    raw["data"]["sessions"] = ["2023-04-04", "2024-07-18"]
    raw["storage"] = {"root": str(tmp_path / "runs")}
    path = tmp_path / "two_sessions.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["backtest", "--config", str(path), "--run-id", "gap", "--no-progress"]) == 2
    error = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "session '2024-07-18' starts 471.0 days after session '2023-04-04' ends" in error[0]

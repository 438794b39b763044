"""``sapphire report RUN_ID`` on a run stored by the real actor system (bundled sample)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import ray

from actors.system import run_system
from sapphire.cli import report_cmd
from tests.actors.harness import make_config
from tests.ray_local import init_local


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    config = make_config(
        root, data={"source": "sample", "batch_events": 2000, "max_events": 20_000}
    )
    init_local(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        result = run_system(config, run_id="report-run")
    finally:
        ray.shutdown()
    assert result.steps > 0
    return root / "store"


@pytest.mark.slow
def test_report_writes_html_with_every_figure(
    stored_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["report", "report-run", "--root", str(stored_run), "--out", str(tmp_path)])
    assert args.handler(args) == 0
    page = (tmp_path / "report-run.html").read_text(encoding="utf-8")
    for name in ("equity", "fills", "risk", "llm"):
        png = tmp_path / f"report-run_{name}.png"
        assert png.is_file() and png.stat().st_size > 5_000, f"{name} figure missing or empty"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Interactive and self-contained: plotly.js inlined once, no script fetched from anywhere.
    assert "<script src=" not in page
    assert page.count("Plotly.newPlot(") >= 3  # price and fills, equity, risk
    for section in ("price and fills", "equity and drawdown", "trades (", "risk decisions"):
        assert f"<h2>{section}" in page
    # The stats header: this run spans seconds, so its Sharpe is n/a with the reason.
    assert "Sharpe (firm)" in page and "n/a: " in page
    # Without the config the page says its prices are ticks.
    assert "prices in ticks" in page
    # The agents table and the trade list name the agents that traded.
    assert "<td>mm</td>" in page
    assert "fills" in page and "risk_rejected" in page
    out = capsys.readouterr().out
    assert "wrote" in out
    # the agents table on the terminal: one line per agent, equity and drawdown as stored
    # (Decimals at the quote's 8 decimals), never a float's digits or a figure cut in two
    [mm] = [line for line in out.splitlines() if line.startswith("│ mm ")]
    money = re.findall(r"-?\d+\.\d+", mm)
    assert money and all(re.fullmatch(r"-?\d+\.\d{8}", m) for m in money[:2]), mm


@pytest.mark.slow
def test_report_with_the_config_prices_in_quote_units(stored_run: Path, tmp_path: Path) -> None:
    """The run's config gives the instruments: fills and the mid in USDT, not ticks."""
    from sapphire.data.instruments import load_instrument_file
    from sapphire.data.sample import instrument_file
    from sapphire.research.run_report import write_run_report

    inst = load_instrument_file(instrument_file())
    report = write_run_report(stored_run, "report-run", tmp_path, {inst.symbol: inst}, 10_000.0)
    page = report.html.read_text(encoding="utf-8")
    assert "prices in ticks" not in page and f"price ({inst.quote})" in page
    assert "firm return" in page


@pytest.mark.slow
def test_unknown_run_is_a_clear_error(
    stored_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["report", "no-such-run", "--root", str(stored_run), "--out", str(tmp_path)])
    assert args.handler(args) == 1
    assert "no-such-run" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_report_exits_as_query_does_on_a_missing_store_or_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a missing store exited 1 (the README: 2, as `sapphire query`), and an unknown run id
    # did not name the runs the store holds
    from sapphire.cli import main
    from tests.cli.demo_runs import backtest, demo

    assert main(["report", "any", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no store at" in capsys.readouterr().err
    assert backtest(demo(tmp_path), "held") == 0
    capsys.readouterr()
    assert main(["report", "helt", "--root", str(tmp_path / "runs" / "store")]) == 1
    assert "runs there: held" in capsys.readouterr().err
    for i in range(5):  # more runs than the hint shows: it says how many there are
        assert backtest(demo(tmp_path), f"more{i}") == 0
    capsys.readouterr()
    assert main(["report", "helt", "--root", str(tmp_path / "runs" / "store")]) == 1
    assert "runs there (the 5 latest of 6):" in capsys.readouterr().err


def test_report_lists_idle_agents_with_the_config_or_the_store_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent that never traded is in the report given the run's config, with zeros, as
    the run's own summary lists it (the report named only the agents its rows named)."""
    import msgspec

    from sapphire.cli import main
    from sapphire.config.system import load_config

    raw = msgspec.to_builtins(load_config(Path(__file__).parents[2] / "configs" / "demo.yaml"))
    raw["data"]["max_events"] = 3_000
    raw["storage"]["root"] = str(tmp_path / "runs")
    idle = {"id": "idle", "kind": "momentum", "symbol": "BTCUSDT"}
    idle["params"] = {"threshold_bps": 10_000.0}  # never trades
    raw["agents"] = [*raw["agents"], idle]
    config = tmp_path / "idle.yaml"
    config.write_bytes(msgspec.yaml.encode(raw))
    assert main(["backtest", "--config", str(config), "--run-id", "idle", "--no-progress"]) == 0
    capsys.readouterr()
    out_dir = tmp_path / "out"
    args = _parse(["report", "idle", "--config", str(config), "--out", str(out_dir)])
    assert args.handler(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ idle ")]
    assert len(rows) == 1, rows
    assert "<td>idle</td>" in (out_dir / "idle.html").read_text(encoding="utf-8")
    # the store alone gives the same agents and capital: the run recorded them beside it
    store = tmp_path / "runs" / "store"
    args = _parse(["report", "idle", "--root", str(store), "--out", str(tmp_path / "bare")])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("│ idle ")] == rows
    assert "<td>idle</td>" in (tmp_path / "bare" / "idle.html").read_text(encoding="utf-8")

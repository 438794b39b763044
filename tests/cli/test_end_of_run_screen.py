"""The end-of-run screen of `sapphire backtest` as a person sees it at 120 columns: every agent
(idle ones too) with firm totals and unrealised PnL, money whole at its asset's scale,
rejections explained, the store and the exact next commands; and those commands work."""

from __future__ import annotations

import re
import shlex
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from sapphire.cli import main
from tests.conftest import REPO_ROOT

MONEY = re.compile(r"-?\d+\.\d{8}\b")


def config(tmp_path: Path) -> Path:
    raw = msgspec.yaml.decode((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    raw["data"] = {**raw["data"], "max_events": 10_000}
    raw["agents"] = [
        *raw["agents"],
        # never settles in 10k events: an idle agent, which the screen must still list
        {
            "id": "sleepy",
            "kind": "momentum",
            "symbol": "BTCUSDT",
            "params": {"slow_span": 10**7, "fast_span": 5},
        },
    ]
    # a tight order rate, so the screen has a risk rejection to explain
    raw["risk"]["default_agent"]["max_orders_per_second"] = 2
    raw["storage"] = {"root": "runs"}  # relative: the screen must print the real path
    path = tmp_path / "screen.yaml"
    path.write_bytes(msgspec.yaml.encode(raw))
    return path


def test_screen_at_120_columns_and_the_commands_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    path = config(tmp_path)
    assert main(["backtest", "--config", str(path), "--run-id", "screen-1"]) == 0
    screen = capsys.readouterr().out
    lines = screen.splitlines()
    assert "…" not in screen and "..." not in screen
    # the tables fit the screen; only paths and commands run on whole, to be pasted
    whole = ("next: ", "      sapphire ", "store: ", "backtest screen-1: ")
    assert max(len(line) for line in lines if not line.startswith(whole)) <= 120
    # the start-up line says what runs and where it goes, before any figure
    store = tmp_path / "runs" / "store"
    assert lines[0].startswith("backtest screen-1: mm_as (avellaneda_stoikov BTCUSDT)")
    assert "~125,409 events" not in lines[0]  # max_events bounds the bar's total
    assert "~10,000 events" in " ".join(lines[:3])
    # every agent, idle ones included, each with four whole money figures
    rows = {}
    for agent in ("mm_as", "momentum", "meanrev", "sleepy"):
        row = next(line for line in lines if f"{agent}/BTCUSDT" in line)
        figures = MONEY.findall(row)
        assert len(figures) == 4, row
        rows[agent] = [Decimal(f) for f in figures]
    assert rows["sleepy"] == [Decimal(0)] * 4
    assert "unrealized (USDT)" in screen
    # the firm total is the sum of the agents' rows, column by column
    total = next(line for line in lines if "firm total" in line)
    assert [Decimal(f) for f in MONEY.findall(total)] == [
        sum(r[i] for r in rows.values()) for i in range(4)
    ]
    # PnL = realized + unrealized - fees, per agent, to the satoshi of USDT
    for realized, unrealized, fees, pnl in rows.values():
        assert realized + unrealized - fees == pnl
    # a rejection says what it means
    assert re.search(r"risk rejected: risk_order_rate - over risk max_orders_per_second", screen)
    # the real store path, and the exact next commands, whole
    assert str(store) in screen
    query = next(line for line in lines if line.startswith("next: sapphire query"))
    report = lines[lines.index(query) + 1].strip()
    assert query == f"next: sapphire query screen-1 --root {store} --table fills"
    assert report == f"sapphire report screen-1 --root {store}"
    # ...which run as printed: fills in instrument units, UTC times
    assert main(shlex.split(query.removeprefix("next: sapphire "))) == 0
    fills = capsys.readouterr().out
    assert "(2024-08-08, UTC)" in fills
    first = next(line for line in fills.splitlines() if "BTCUSDT" in line)
    assert re.search(r"\b6\d{4}\.\d\b", first), "price in USDT with the tick's one decimal"
    assert re.search(r"\b0\.\d{3}\b", first), "size in BTC with the lot's three decimals"
    # a wrong run or root: non-zero, one clear line naming what was looked for
    assert main(["query", "screen-2", "--root", str(store), "--table", "fills"]) == 1
    err = capsys.readouterr().err
    assert "run 'screen-2' has no rows" in err and "screen-1" in err
    assert main(["query", "screen-1", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no store at" in capsys.readouterr().err

"""Agents size orders on the order step when the book's size grid is finer (issue #16 item 4):
on an instrument with ``size_increment`` no agent sends an INVALID_LOT order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from sapphire.agents.avellaneda_stoikov import AvellanedaStoikovAgent
from sapphire.agents.bar_policy import StakeConfig, entry_lots
from sapphire.agents.grid_maker import GridMakerAgent
from sapphire.agents.mean_reversion import MeanReversionAgent
from sapphire.agents.momentum import MomentumAgent
from sapphire.exchange.validation import check_filters
from sapphire.model import OrderIntent
from tests.agents.streams import BTCUSDT, drive, spot_quotes_trades

# Binance spot as its metadata has it: orders step by 0.00001 BTC, book sizes by 1e-8
FINE = msgspec.structs.replace(BTCUSDT, size_increment="0.00000001")
AGENTS: list[tuple[type[Any], dict[str, Any]]] = [
    (AvellanedaStoikovAgent, {"order_amount": 0.0012345, "max_inventory": 0.005}),
    (GridMakerAgent, {"order_lots": 3, "max_position_lots": 9}),
    (MomentumAgent, {"fast_span": 20, "slow_span": 200, "threshold_bps": 0.02, "order_lots": 2}),
    (MeanReversionAgent, {"order_lots": 2}),
]


@pytest.mark.parametrize(("cls", "params"), AGENTS, ids=[a[0].__name__ for a in AGENTS])
def test_orders_are_whole_lot_steps_on_a_finer_size_grid(
    cls: type[Any], params: dict[str, Any]
) -> None:
    assert FINE.lots_per_step == 1_000
    events = spot_quotes_trades(1_500)
    orders = [o for o in drive(cls("a", FINE, params), events) if isinstance(o, OrderIntent)]
    coarse = [o for o in drive(cls("a", BTCUSDT, params), events) if isinstance(o, OrderIntent)]
    assert orders, "the agent never traded: nothing checked"
    for order in orders:
        ref = order.limit_ticks or 2_800_000
        failure = check_filters(FINE, order.order_type, order.limit_ticks, order.qty_lots, ref)
        assert failure is None or failure[0].name != "INVALID_LOT", failure
    # the same decisions in the same quantities: configured sizes count order steps
    assert [(o.side, FINE.lots_to_qty(o.qty_lots)) for o in orders] == [
        (o.side, BTCUSDT.lots_to_qty(o.qty_lots)) for o in coarse
    ]


def test_a_stake_fraction_buys_whole_order_steps() -> None:
    stake = StakeConfig(stake_fraction=0.5)
    lots = entry_lots(stake, Decimal(1_000), FINE.price_to_ticks("28000"), FINE)
    # 500 USDT at 28,000: 0.017857 BTC, floored to the 0.00001 step
    assert FINE.lots_to_qty(lots) == Decimal("0.01785") and FINE.on_lot_step(lots)

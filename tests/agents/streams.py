"""Small real event streams shared by the agent and backtest tests (cached per process)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from sapphire.agents.base import AgentOutput
from sapphire.backtest import _loaders
from sapphire.model import Instrument, OrderFilled, OrderIntent, OrderStatus, OrderType, OrderUpdate
from sapphire.model.events import AnyMarketEvent, Bar, Side
from tests.conftest import shared_data_dir

BTCUSDT = Instrument(
    symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick_size="0.01",
    lot_size="0.00001",
    maker_fee_bps="0",
    taker_fee_bps="1",
)


@lru_cache(maxsize=2)
def spot_quotes_trades(limit: int = 4000) -> tuple[AnyMarketEvent, ...]:
    """The first ``limit`` BBO + trade events of Binance spot BTCUSDT, session 2023-04-05."""
    data = shared_data_dir()
    events = _loaders.hftbacktest_events(
        data / "book" / "hftbacktest_binance-spot_BTCUSDT_bbo.csv.gz",
        data / "trades" / "hftbacktest_binance-spot_BTCUSDT_trades.csv.gz",
        BTCUSDT,
        "2023-04-05",
        limit=limit,
    )
    return tuple(events)


@lru_cache(maxsize=4)
def ohlcv(name: str, max_bars: int | None = None) -> tuple[Instrument, object]:
    raw = _loaders.read_ohlcv(shared_data_dir() / "ohlcv" / name)
    if max_bars is not None:
        raw = raw.head(max_bars)
    inst = _loaders.instrument_for(raw, "X", fee_bps="10")
    return inst, _loaders.tick_frame(raw, inst)


def bars(name: str, max_bars: int | None = None) -> tuple[Instrument, list[Bar]]:
    inst, frame = ohlcv(name, max_bars)
    return inst, list(_loaders.bar_events(frame, "X"))  # type: ignore[arg-type]


def data_path(*parts: str) -> Path:
    return shared_data_dir().joinpath(*parts)


def drive(agent: object, events: Sequence[AnyMarketEvent]) -> list[AgentOutput]:
    """Feed events; market intents fill at once at the event's price, limits are accepted.

    The synthetic reports depend only on the events and the agent's outputs, so an agent
    restored mid-stream must produce exactly the uninterrupted agent's outputs.
    """
    out: list[AgentOutput] = []
    fill_no = 0
    for event in events:
        produced = list(agent.on_event(event, event.ts_event_ns))  # type: ignore[attr-defined]
        out.extend(produced)
        for item in produced:
            if not isinstance(item, OrderIntent):
                continue
            if item.order_type is OrderType.MARKET:
                fill_no += 1
                price = (
                    getattr(event, "price_ticks", None)
                    or getattr(event, "close_ticks", None)
                    or getattr(event, "ask_ticks", 1)
                )
                report: OrderFilled | OrderUpdate = OrderFilled(
                    ts_event_ns=event.ts_event_ns,
                    client_order_id=item.client_order_id,
                    agent_id=item.agent_id,
                    symbol=item.symbol,
                    side=item.side,
                    price_ticks=int(price),
                    qty_lots=item.qty_lots,
                    fee_quote=Decimal("0.01"),
                    is_maker=False,
                    fill_id=f"f{fill_no}",
                )
            else:
                report = OrderUpdate(
                    ts_event_ns=event.ts_event_ns,
                    client_order_id=item.client_order_id,
                    agent_id=item.agent_id,
                    symbol=item.symbol,
                    status=OrderStatus.ACCEPTED,
                    leaves_lots=item.qty_lots,
                )
            out.extend(agent.on_report(report, event.ts_event_ns))  # type: ignore[attr-defined]
    return out


def filled(
    agent_id: str,
    client_order_id: str,
    ts_ns: int,
    price_ticks: int,
    qty_lots: int,
    side: Side = Side.BUY,
) -> OrderFilled:
    """A taker fill of one of ``agent_id``'s orders, no fee, as a venue reports it."""
    return OrderFilled(
        ts_event_ns=ts_ns,
        client_order_id=client_order_id,
        agent_id=agent_id,
        symbol="BTCUSDT",
        side=side,
        price_ticks=price_ticks,
        qty_lots=qty_lots,
        fee_quote=Decimal(0),
        is_maker=False,
        fill_id=f"f-{client_order_id}-{ts_ns}",
    )

"""The paper venue forgets orders a while after they end, so a run's memory and each
checkpoint stay bounded however long it quotes, and what it answers never depends on when
it dropped them."""

from __future__ import annotations

import pickle

import msgspec
import pytest

from sapphire.exchange.config import PaperExchangeBuilder
from sapphire.exchange.paper import PaperExchange
from sapphire.model.events import BookSnapshot, Side
from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import (
    CancelOrder,
    OrderStatus,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
)

SYMBOL = "BTCUSDT"
S = 1_000_000_000
ENTRY_NS = 2_000_000


def _venue(memory_s: float) -> PaperExchange:
    inst = Instrument(
        symbol=SYMBOL,
        kind=InstrumentKind.SPOT,
        base="BTC",
        quote="USDT",
        tick_size="0.1",
        lot_size="0.001",
    )
    config = (
        PaperExchangeBuilder()
        .instrument(inst)
        .balance("USDT", "100000")
        .constant_latency(entry_ns=ENTRY_NS, response_ns=ENTRY_NS)
        .config()
    )
    ex = PaperExchange(msgspec.structs.replace(config, finished_order_memory_s=memory_s))
    ex.on_market_event(
        BookSnapshot(ts_event_ns=S, symbol=SYMBOL, bids=((990, 5),), asks=((1010, 5),), update_id=1)
    )
    return ex


def _submit(ex: PaperExchange, cid: str, now: int) -> None:
    ex.submit(
        SubmitOrder(
            ts_event_ns=now,
            client_order_id=cid,
            agent_id="mm",
            symbol=SYMBOL,
            side=Side.BUY,
            qty_lots=1,
            limit_ticks=980,
        ),
        now,
    )


def _cancel(ex: PaperExchange, cid: str, now: int) -> None:
    ex.cancel(CancelOrder(ts_event_ns=now, client_order_id=cid, symbol=SYMBOL), now)


def _quote_and_cancel(ex: PaperExchange, cycles: int, start: int, every_ns: int) -> int:
    """A market maker's life: quote, cancel, quote again; returns the time it ends."""
    now = start
    for i in range(cycles):
        _submit(ex, f"mm-{i}", now)
        ex.advance(now + ENTRY_NS)
        _cancel(ex, f"mm-{i}", now + ENTRY_NS)
        now += every_ns
        ex.advance(now)
        ex.poll(now)
    return now


def _canceled_at_2s() -> PaperExchange:
    """A venue remembering final orders for 10 s, whose order mm-1 was canceled at ~2 s."""
    ex = _venue(memory_s=10.0)
    _submit(ex, "mm-1", 2 * S)
    _cancel(ex, "mm-1", 2 * S + ENTRY_NS)
    ex.advance(3 * S)
    ex.poll(3 * S)
    return ex


def test_a_long_quoting_run_keeps_the_venue_and_its_checkpoint_bounded() -> None:
    ex = _venue(memory_s=10.0)
    now = _quote_and_cancel(ex, 200, 2 * S, S // 2)  # 100 s of quoting
    size_short = len(pickle.dumps(ex))
    remembered = len(ex.orders())
    _quote_and_cancel(ex, 2000, now, S // 2)  # ten times longer
    assert len(ex.orders()) == remembered <= 21  # the last 10 s: two orders a second
    assert len(pickle.dumps(ex)) < 1.2 * size_short
    # without forgetting (0), the record and the checkpoint grow with the run
    keep = _venue(memory_s=0.0)
    _quote_and_cancel(keep, 2200, 2 * S, S // 2)
    assert len(keep.orders()) == 2200
    assert len(pickle.dumps(keep)) > 20 * size_short


def test_a_cancel_of_an_order_the_venue_forgot_is_answered_as_for_an_unknown_order() -> None:
    ex = _canceled_at_2s()
    # remembered: the answer carries the order's own status
    _cancel(ex, "mm-1", 5 * S)
    ex.advance(6 * S)
    (known,) = ex.poll(6 * S)
    assert isinstance(known, OrderUpdate)
    assert (known.agent_id, known.status, known.reason) == (
        "mm",
        OrderStatus.CANCELED,
        RejectReason.UNKNOWN_ORDER,
    )
    # forgotten once it has been final for 10 s of venue time
    _cancel(ex, "mm-1", 13 * S)
    ex.advance(14 * S)
    (gone,) = ex.poll(14 * S)
    assert isinstance(gone, OrderUpdate)
    assert (gone.agent_id, gone.status) == ("", OrderStatus.REJECTED)
    assert ex.order_state("mm-1") is None


def test_an_id_is_used_again_only_after_the_venue_forgot_it() -> None:
    ex = _canceled_at_2s()
    _submit(ex, "mm-1", 4 * S)  # still remembered: a duplicate
    ex.advance(5 * S)
    (dup,) = ex.poll(5 * S)
    assert isinstance(dup, OrderUpdate) and dup.reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID
    _submit(ex, "mm-1", 20 * S)  # forgotten: a new order
    ex.advance(21 * S)
    (accepted,) = ex.poll(21 * S)
    assert isinstance(accepted, OrderUpdate) and accepted.status is OrderStatus.ACCEPTED
    ex.advance(40 * S)  # the first order's forgetting must not drop the new one
    view = ex.order_state("mm-1")
    assert view is not None and view.status is OrderStatus.ACCEPTED
    assert [o.client_order_id for o in ex.orders()] == ["mm-1"]


@pytest.mark.parametrize("restore", [False, True])
def test_what_the_venue_answers_does_not_depend_on_when_it_forgets(restore: bool) -> None:
    """One venue advanced ten times a second, the other every third second (its actions
    wait, and are run after it could have forgotten what they name; and, in the second
    case, it is snapshotted and restored half way): the same reports and record.

    The venue remembers a final order for 10.001 s. ``mm-`` ids come back after 13 s: new
    orders. ``dup-`` ids come back every 5 s: duplicates while the first order is
    remembered; the cancel sent with the one 10 s later arrives 1 ms before it is
    forgotten, and is answered with its status."""
    often, rarely = _venue(10.001), _venue(10.001)
    for i in range(80):
        now = 2 * S + i * S
        for ex in (often, rarely):
            for cid in (f"mm-{i % 13}", f"dup-{i % 5}"):
                _submit(ex, cid, now)
                _cancel(ex, cid, now + ENTRY_NS)
        for k in range(1, 10):
            often.advance(now + k * S // 10)
        if i % 3 == 2:
            rarely.advance(now + S - 1)
        if restore and i == 40:
            rarely = PaperExchange.restore(rarely.snapshot())
    end = 2 * S + 81 * S
    often.advance(end)
    rarely.advance(end)
    seen = often.poll(end)
    assert seen == rarely.poll(end)
    assert often.orders() == rarely.orders()
    updates = [r for r in seen if isinstance(r, OrderUpdate)]
    # dup ids: accepted, then two duplicates, every 15 s (16 submits of each of 5 ids)
    assert sum(r.reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID for r in updates) == 50
    assert sum(r.status is OrderStatus.ACCEPTED for r in updates) == 80 + 30
    late = [
        r
        for r in updates
        if r.client_order_id.startswith("dup-") and r.reason is RejectReason.UNKNOWN_ORDER
    ]
    assert late and all(r.status is OrderStatus.CANCELED for r in late)

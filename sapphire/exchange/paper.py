"""The paper exchange: our orders against recorded markets, behind ``ExecutionGateway``.

Two clocks meet here, both int ns on the same epoch: market events advance the venue's clock
(``ts_event_ns``); ``submit``/``cancel``/``amend``/``poll`` take the caller's ``now_ns``. An
action reaches the matching engine at ``now_ns + entry latency`` and is executed before the
first market event at or after that time (or by ``advance``); every report is delivered by
``poll`` once ``its venue time + response latency`` has passed. Nothing reads a clock and all
ties are broken by arrival order, so the same input gives the same output.

Reports: ``OrderUpdate`` for ACCEPTED (also after an amend, message "amended"), REJECTED,
CANCELED, EXPIRED and FILLED; ``OrderFilled`` for every execution.

Liquidation (``config.liquidation``): after every market event, action and funding, each
settlement asset whose balance moved, or whose position's mark reached its liquidation
price, is tested (:meth:`Account.margin`, at the exact mark of :meth:`_mark`); one whose
equity is at or below its maintenance margin has its orders on those contracts canceled
(reason LIQUIDATION) and its positions closed at the mark by ``OrderFilled`` reports with
``liquidation`` set, one per agent whose fills built the position (client order id
``autoclose-SYMBOL-N``, as Binance names its own). The same input liquidates at the same
event in every runner: nothing but the venue's events and actions moves it.

The book (``config.book_from_quotes``): a symbol's depth (snapshots and diffs) builds it;
a symbol whose data has no depth gets it from its quotes, one level a side
(:meth:`MatchingEngine.on_quote`). A symbol is quote-driven until its first depth event
and depth-driven from then on (quotes ignored, the quote's levels dropped): one rule read
off the venue's own events, so every runner decides it at the same event, and the book is
never built from both.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from types import MappingProxyType

from sapphire.book.l2 import BookError, L2Book
from sapphire.exchange.account import LOCK_CONTEXT, LOCK_QUANTUM, Account
from sapphire.exchange.amend import AmendResult, apply_amend
from sapphire.exchange.config import (
    LatencyKind,
    PaperExchangeBuilder,
    PaperExchangeConfig,
    QuoteBookMode,
)
from sapphire.exchange.gateway import ExecutionReport, cancel_rejected
from sapphire.exchange.impact import ImpactTracker
from sapphire.exchange.latency import latency_from_config
from sapphire.exchange.matching import MarketBook, MatchingEngine
from sapphire.exchange.queue import queue_from_config
from sapphire.exchange.state import OrderView, SimOrder
from sapphire.exchange.validation import (
    Action,
    TradeAverage,
    check_new_order,
    check_percent_price,
    lock_asset,
)
from sapphire.model.events import (
    AnyMarketEvent,
    BookDelta,
    BookDeltas,
    BookSnapshot,
    FundingRate,
    Quote,
    Side,
    Trade,
)
from sapphire.model.instrument import Instrument, PriceBandReference
from sapphire.model.orders import (
    AmendOrder,
    CancelOrder,
    OrderFilled,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RejectReason,
    SubmitOrder,
    TimeInForce,
)
from sapphire.storage.money import quote_scale, round_money

# a liquidation bound no mark reaches (2 x mark, in ticks)
_NO_BOUND = 1 << 62


class PaperExchange:
    """Implements :class:`sapphire.exchange.gateway.ExecutionGateway`."""

    # class defaults: a venue pickled before liquidation existed goes on without it
    liquidations = 0
    _liquidating = False
    # a venue pickled before quotes built books: its books are depth-driven, as they were
    _by_quotes: frozenset[str] = frozenset()
    _quote_built: frozenset[str] = frozenset()
    # and with no expiries counted (replaced, never changed in place: a class default)
    _expiries: Mapping[str, int] = MappingProxyType({})

    def __init__(
        self, config: PaperExchangeConfig, books: Mapping[str, MarketBook] | None = None
    ) -> None:
        """``books`` replaces the default :class:`L2Book` per symbol (array books)."""
        self.config = config
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in config.instruments}
        self.account = Account(
            self.instruments,
            {a: Decimal(v) for a, v in config.balances.items()},
            leverage=config.leverage,
            mark=self.mark_ticks,
        )
        self._latency = latency_from_config(config.latency)
        self._observes = config.latency.kind is not LatencyKind.CONSTANT
        queue = queue_from_config(config.queue)
        self._engines: dict[str, MatchingEngine] = {}
        for symbol in self.instruments:
            impact = ImpactTracker(config.impact.recovery_ns) if config.impact.enabled else None
            self._engines[symbol] = MatchingEngine(
                symbol,
                books[symbol] if books and symbol in books else L2Book(symbol),
                queue,
                self._on_fill,
                impact=impact,
                trade_through_fills_all=config.trade_through_fills_all,
                book_cross_fills=config.book_cross_fills,
                self_trade=config.self_trade,
                expire=self._expire_self_trade,
            )
        # the orders the venue remembers: open ones, and final ones for
        # ``finished_order_memory_s`` after they ended (``_finished``: when each ended, in
        # that order, so the old ones are dropped from the front)
        self._orders: dict[str, SimOrder] = {}
        self._finished: deque[tuple[int, str]] = deque()
        self._memory_ns = int(config.finished_order_memory_s * 1e9)
        self._pending: list[tuple[int, int, Action]] = []
        self._reports: list[tuple[int, int, ExecutionReport]] = []
        self._fills: list[OrderFilled] = []
        self._seq = 0
        # one connection delivers in order, whatever each message's own latency (a recorded
        # latency that drops let a cancel overtake its submit, and a fill its ACCEPTED)
        self._last_arrive = 0
        self._last_deliver = 0
        self._fill_seq = 0
        self._clock_ns = 0
        self._last_trade: dict[str, int] = {}
        # the average trade price of each symbol whose percent-price band is drawn around it
        # (Binance spot); a band around the mark (futures) reads the book instead
        self._banded = frozenset(i.symbol for i in config.instruments if i.has_price_band)
        self._averages: dict[str, TradeAverage] = {
            i.symbol: TradeAverage(i.avg_price_mins)
            for i in config.instruments
            if i.symbol in self._banded and i.price_band_reference is PriceBandReference.AVERAGE
        }
        self.ignored_events = 0
        # the symbols whose book quotes may still build (no depth event yet), and those
        # whose book a quote has built (their first diff starts from an empty book)
        auto = config.book_from_quotes is QuoteBookMode.AUTO
        self._by_quotes = frozenset(self.instruments) if auto else frozenset()
        self._quote_built = frozenset()
        # orders the venue expired, by reason ("" where a market or IOC order filled part
        # and its remainder expired): the summary says why (the runners' reports count
        # only refusals); self-trade expiries are counted with the refusals already
        self._expiries = {}
        # liquidation: each perpetual's and future's settlement asset, its maintenance and
        # clearance fee rates (the instrument's own, else the config's default), the
        # bounds of 2 x mark outside which a position's asset is tested again (symbol ->
        # (low, high, asset): tested at <= low or >= high), and the lots each agent's fills
        # built in each symbol (whose fills a liquidation's close is reported to)
        liq = config.liquidation
        self._margin_asset = {
            i.symbol: i.settle_asset for i in config.instruments if i.liquidatable
        }
        self._liquidating = liq.enabled and bool(self._margin_asset)
        self._maint_rates = {
            i.symbol: Fraction(i.maint_margin_rate or liq.maint_margin_rate)
            for i in config.instruments
            if i.liquidatable
        }
        self._fee_rates = {
            i.symbol: Decimal(i.liquidation_fee_rate or liq.fee_rate)
            for i in config.instruments
            if i.liquidatable
        }
        self._watch: dict[str, tuple[int, int, str]] = {}
        self._agent_lots: dict[tuple[str, str], int] = {}
        self.liquidations = 0  # positions the venue closed

    @classmethod
    def builder(cls) -> PaperExchangeBuilder:
        return PaperExchangeBuilder()

    def snapshot(self) -> bytes:
        """Full state as bytes; see :meth:`restore`. The venue actor's checkpoint is this
        pickle too: one snapshot of the venue, so a field added to it (the liquidations'
        attribution, an account below zero) is never left out of one of two formats."""
        import pickle

        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, data: bytes) -> PaperExchange:
        """A new exchange in exactly the state ``snapshot`` captured."""
        import pickle

        try:
            venue = pickle.loads(data)
        except Exception as exc:  # pickle raises whatever the bytes make it meet
            raise ValueError(f"cannot restore a paper exchange: {exc!r}") from None
        if not isinstance(venue, cls):
            raise ValueError(f"cannot restore a paper exchange from a {type(venue).__name__}")
        return venue

    # -- gateway ----------------------------------------------------------------------------
    def submit(self, order: SubmitOrder, now_ns: int) -> None:
        arrive = now_ns + self._latency.entry_ns(now_ns)
        if self._known(order.client_order_id, now_ns) is not None:
            # The original order is untouched: a re-send after a restart is recognised.
            self._report_at(
                arrive,
                OrderUpdate(
                    ts_event_ns=arrive,
                    client_order_id=order.client_order_id,
                    agent_id=order.agent_id,
                    symbol=order.symbol,
                    status=OrderStatus.REJECTED,
                    reason=RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                    message="client order id already used; original order unchanged",
                ),
            )
            return
        # an id used again after the venue forgot it: the new order takes the arrival order
        self._orders.pop(order.client_order_id, None)
        self._orders[order.client_order_id] = SimOrder(
            client_order_id=order.client_order_id,
            agent_id=order.agent_id,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            tif=order.tif,
            limit_ticks=order.limit_ticks,
            qty_lots=order.qty_lots,
            ts_ns=now_ns,
        )
        self._push(arrive, order)

    def cancel(self, cancel: CancelOrder, now_ns: int) -> None:
        self._push(now_ns + self._latency.entry_ns(now_ns), cancel)

    def amend(self, amend: AmendOrder, now_ns: int) -> None:
        self._push(now_ns + self._latency.entry_ns(now_ns), amend)

    def on_market_event(self, event: AnyMarketEvent) -> None:
        if self._observes:
            self._latency.observe(event)
        ts = event.ts_event_ns
        if self._pending and self._pending[0][0] <= ts:
            self.advance(ts)
        elif ts > self._clock_ns:
            self._clock_ns = ts
        engine = self._engines.get(event.symbol)
        kind = type(event)
        if engine is None:
            self.ignored_events += len(event.levels) if kind is BookDeltas else 1  # type: ignore[union-attr]
            return
        if kind is BookDeltas:
            if self._by_quotes:
                self._depth_arrives(event.symbol, engine, snapshot=False)
            engine.on_deltas(event)  # type: ignore[arg-type]
        elif kind is BookDelta:
            if self._by_quotes:
                self._depth_arrives(event.symbol, engine, snapshot=False)
            engine.on_delta(event)  # type: ignore[arg-type]
        elif kind is Trade:
            self._last_trade[event.symbol] = event.price_ticks  # type: ignore[union-attr]
            average = self._averages.get(event.symbol)
            if average is not None:
                average.add(ts, event.price_ticks, event.qty_lots)  # type: ignore[union-attr]
            engine.on_trade(event)  # type: ignore[arg-type]
        elif kind is BookSnapshot:
            if self._by_quotes:
                self._depth_arrives(event.symbol, engine, snapshot=True)
            try:
                engine.on_snapshot(event)  # type: ignore[arg-type]
            except BookError:  # crossed or negative: the book stays as it was, counted
                self.ignored_events += 1
        elif kind is FundingRate:
            self._on_funding(event)  # type: ignore[arg-type]
        elif kind is Quote and event.symbol in self._by_quotes:
            try:
                engine.on_quote(event)  # type: ignore[arg-type]
            except BookError:  # crossed: the book stays as it was, counted
                self.ignored_events += 1
            else:
                if event.symbol not in self._quote_built:
                    self._quote_built = self._quote_built | {event.symbol}
        else:
            # Bars move no book, nor do quotes a depth-driven one (book_from_quotes).
            self.ignored_events += 1
        if self._liquidating:
            self._check_margin(event.symbol, ts)

    def _depth_arrives(self, symbol: str, engine: MatchingEngine, *, snapshot: bool) -> None:
        """The first depth event of ``symbol``: its book is depth-driven from now on. The
        quote's levels go before a diff (it moves the depth book, which starts empty and,
        sequenced, waits for its snapshot, as it would with no quotes before it); a
        snapshot replaces them itself, and the size the quote showed our orders is not
        offered to them again."""
        if symbol not in self._by_quotes:
            return
        self._by_quotes = self._by_quotes - {symbol}
        if symbol in self._quote_built:
            self._quote_built = self._quote_built - {symbol}
            if not snapshot:
                engine.book.clear()

    def advance(self, now_ns: int) -> None:
        """Run every action that has reached the venue by ``now_ns``."""
        if now_ns > self._clock_ns:
            self._clock_ns = now_ns
        pending, finished, aged = self._pending, self._finished, self._aged
        while pending and pending[0][0] <= now_ns:
            arrive, _, action = heapq.heappop(pending)
            # forgotten as of the action's arrival, not later: it may name an order that
            # ended within the memory before it arrived
            if finished and aged(finished[0][0], arrive):
                self._forget(arrive)
            if type(action) is SubmitOrder:
                self._on_submit(action, arrive)
            elif type(action) is CancelOrder:
                self._on_cancel(action, arrive)
            else:
                self._on_amend(action, arrive)  # type: ignore[arg-type]
            if self._liquidating and self.account.changed:
                self._test_changed(arrive)  # an order that filled moved the margin
        if finished and aged(finished[0][0], now_ns):
            self._forget(now_ns)

    def poll(self, now_ns: int) -> Sequence[ExecutionReport]:
        out: list[ExecutionReport] = []
        reports = self._reports
        while reports and reports[0][0] <= now_ns:
            out.append(heapq.heappop(reports)[2])
        return out

    # -- queries ----------------------------------------------------------------------------
    def order_state(self, client_order_id: str) -> OrderView | None:
        order = self._known(client_order_id, self._clock_ns)
        return None if order is None else order.view()

    def orders(self) -> list[OrderView]:
        """Every order the venue remembers (all it received, but those final for longer
        than ``finished_order_memory_s``), in arrival order: its own record."""
        now = self._clock_ns
        return [o.view() for o in self._orders.values() if not self._expired(o, now)]

    def _aged(self, ts_ns: int, now_ns: int) -> bool:
        """``ts_ns`` is older than the venue remembers (``finished_order_memory_s``; never
        while it is 0): the one age rule for orders and fills."""
        memory = self._memory_ns
        return bool(memory) and ts_ns + memory <= now_ns

    def _expired(self, order: SimOrder, now_ns: int) -> bool:
        """Final for longer than the venue remembers (forgotten, whether or not
        :meth:`_forget` has dropped it yet: what the venue answers never depends on when
        that ran)."""
        return order.status.is_final and self._aged(order.ts_update_ns, now_ns)

    def _known(self, client_order_id: str, now_ns: int) -> SimOrder | None:
        order = self._orders.get(client_order_id)
        return None if order is None or self._expired(order, now_ns) else order

    def _forget(self, now_ns: int) -> None:
        """Drop the orders final for longer than the venue remembers, and its record of
        fills as old (each was reported when it happened; the run's store keeps them)."""
        finished, orders, aged = self._finished, self._orders, self._aged
        while finished and aged(finished[0][0], now_ns):
            ended, cid = finished.popleft()
            order = orders.get(cid)
            # the id may have been used again since: only the order that ended then goes
            if order is not None and order.status.is_final and order.ts_update_ns == ended:
                del orders[cid]
        fills = self._fills
        old = 0
        while old < len(fills) and aged(fills[old].ts_event_ns, now_ns):
            old += 1
        del fills[:old]

    def open_orders(self, symbol: str | None = None) -> list[OrderView]:
        return [
            o.view()
            for o in self._orders.values()
            if o.is_open and (symbol is None or o.symbol == symbol)
        ]

    @property
    def fills(self) -> Sequence[OrderFilled]:
        """The fills of the last ``finished_order_memory_s`` (all of them while 0)."""
        now, aged = self._clock_ns, self._aged
        return tuple(f for f in self._fills if not aged(f.ts_event_ns, now))

    def book(self, symbol: str) -> MarketBook:
        return self._engines[symbol].book

    def engine(self, symbol: str) -> MatchingEngine:
        return self._engines[symbol]

    def visible_at_ns(self, event: AnyMarketEvent) -> int:
        """When the strategy sees ``event`` under the feed-latency model (for drivers)."""
        return event.ts_event_ns + self._latency.feed_ns(event)

    def next_arrival_ns(self) -> int | None:
        """When the earliest in-flight action reaches the venue (None: nothing in flight)."""
        return self._pending[0][0] if self._pending else None

    def book_health(self) -> dict[str, int]:
        """What the run summary says of the venue's books: diffs found missing (the book
        offered no liquidity from each until a snapshot resynced it), snapshots older than
        the book and dropped, books still out of sync at the end, and books no snapshot ever
        synced; and the orders the venue expired, by reason (``expired: no_liquidity``,
        ``expired: remainder``: a market or IOC order's rest after part of it filled), those
        that happened only."""
        books = [e.book for e in self._engines.values()]
        return {
            # and its account: assets whose balance went below zero (a loss past the
            # margin: the price gapped past bankruptcy before the liquidation, or
            # liquidation is off), and the positions the venue liquidated
            "balances_below_zero": len(self.account.below_zero),
            "liquidations": self.liquidations,
            "sequence_gaps": sum(getattr(b, "gaps", 0) for b in books),
            "stale_snapshots": sum(getattr(b, "stale_snapshots", 0) for b in books),
            "out_of_sync_at_end": sum(
                1 for b in books if getattr(b, "gaps", 0) and not b.is_synced
            ),
            # diffs and never a snapshot: 2,316 of 2,317 orders expired with no reason shown
            "never_synced": sum(1 for b in books if getattr(b, "waiting_for_snapshot", False)),
        } | {f"expired: {reason or 'remainder'}": n for reason, n in self._expiries.items()}

    def band_reference(self, symbol: str, now_ns: int) -> Fraction | None:
        """The reference a percent-price band is drawn around now, in exact ticks (None:
        the instrument has no band, or the venue has seen no price yet).

        AVERAGE (Binance spot): the recorded trades' volume-weighted average over
        ``avg_price_mins`` (:class:`TradeAverage`), the last trade where the window holds
        none; before the first trade, the book's mid, where those trades would print (a
        depth-only recording never trades, and its orders would otherwise meet no band).
        MARK (Binance futures): the mid, the venue's mark (:meth:`mark_ticks`) unrounded,
        since a recording carries no mark price stream; without a two-sided book, the last
        trade."""
        if symbol not in self._banded:
            return None
        last = self._last_trade.get(symbol)
        average = self._averages.get(symbol)
        if average is not None:
            value = average.price(now_ns)
            if value is not None:
                return value
            if last is not None:  # a restored venue keeps the last trade, not the window
                return Fraction(last)
        return self._mark(symbol)

    def _mark(self, symbol: str) -> Fraction | None:
        """The venue's mark, exact: the book's mid (x.5 ticks where the spread is odd),
        else the last trade, else None. One rule for the account's margin, funding and the
        futures band; each reads it at the precision it needs."""
        two = self._two_marks(symbol)
        return None if two is None else Fraction(two, 2)

    def _two_marks(self, symbol: str) -> int | None:
        """Twice :meth:`_mark`, a whole number of ticks: the rule itself, in integers, so
        the liquidation bounds are tested at every event without a fraction."""
        book = self._engines[symbol].book
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None:
            return bid[0] + ask[0]
        last = self._last_trade.get(symbol)
        return None if last is None else 2 * last

    def mark_ticks(self, symbol: str) -> int | None:
        mark = self._mark(symbol)
        return None if mark is None else int(mark)

    def set_level(
        self, symbol: str, side: Side, price_ticks: int, qty_lots: int, now_ns: int
    ) -> None:
        """Move a market by hand (venue doubles, tests); our resting orders react as to a delta."""
        self.advance(now_ns)
        self._engines[symbol].set_level(side, price_ticks, qty_lots, now_ns)
        if self._liquidating:
            self._check_margin(symbol, now_ns)

    # -- venue side -------------------------------------------------------------------------
    def _on_submit(self, cmd: SubmitOrder, ts: int) -> None:
        order = self._orders[cmd.client_order_id]
        inst = self.instruments.get(cmd.symbol)
        engine = self._engines.get(cmd.symbol)
        if inst is None or engine is None:
            self._reject(order, ts, RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol}")
            return
        verdict = check_new_order(
            order,
            inst,
            engine,
            self.account,
            ts,
            reference_ticks=self.band_reference(cmd.symbol, ts),
        )
        if verdict.reason is not None:
            status = OrderStatus.EXPIRED if verdict.expire else OrderStatus.REJECTED
            self._finish(order, status, ts, verdict.reason, verdict.message)
            return
        asset = lock_asset(inst, order.side)
        order.locked = verdict.lock
        self.account.lock(asset, verdict.lock)
        order.status = OrderStatus.ACCEPTED
        order.ts_update_ns = ts
        self._update(order, ts)
        self._match_or_rest(order, engine, ts)

    def _match_or_rest(self, order: SimOrder, engine: MatchingEngine, ts: int) -> None:
        limit = order.limit_ticks
        # a market order never rests, whatever limit it carries (a protection price: it
        # takes up to there; its remainder rested as a maker order before)
        market = order.order_type is OrderType.MARKET
        if market or limit is None or engine.would_match(order.side, limit):
            engine.take(order, order.leaves_lots, ts)
        if order.status.is_final:
            return
        if market or limit is None or order.tif.value in ("ioc", "fok"):
            reason = RejectReason.NO_LIQUIDITY if order.filled_lots == 0 else None
            self._finish(order, OrderStatus.EXPIRED, ts, reason, "unfilled remainder expired")
            return
        engine.rest(order)

    def _on_cancel(self, cmd: CancelOrder, ts: int) -> None:
        order = self._known(cmd.client_order_id, ts)
        if order is None or order.symbol != cmd.symbol or not order.is_open:
            if order is None:
                answer = cancel_rejected(ts, cmd, "", OrderStatus.REJECTED)
            else:
                answer = cancel_rejected(ts, cmd, order.agent_id, order.status, order.filled_lots)
            self._report_at(ts, answer)
            return
        self._finish(order, OrderStatus.CANCELED, ts, None, "canceled")

    def _on_amend(self, cmd: AmendOrder, ts: int) -> None:
        order = self._known(cmd.client_order_id, ts)
        inst = self.instruments.get(cmd.symbol)
        if order is None or inst is None or order.symbol != cmd.symbol or not order.is_open:
            self._report_at(
                ts,
                OrderUpdate(
                    ts_event_ns=ts,
                    client_order_id=cmd.client_order_id,
                    agent_id="" if order is None else order.agent_id,
                    symbol=cmd.symbol,
                    status=OrderStatus.REJECTED if order is None else order.status,
                    reason=RejectReason.UNKNOWN_ORDER,
                    message="amend rejected: no open order with this id",
                ),
            )
            return
        engine = self._engines[cmd.symbol]
        new_price = cmd.new_limit_ticks
        if new_price is not None and new_price != order.limit_ticks:
            # the band moves with the market: a new price is measured against it now, as a
            # new order's is; a price the order already holds was measured when it came
            bad = check_percent_price(
                inst, order.side, new_price, self.band_reference(cmd.symbol, ts)
            )
            if bad is not None:
                self._update(order, ts, reason=bad[0], message="amend rejected: " + bad[1])
                return
        reason, message, result = apply_amend(order, cmd, inst, engine, self.account)
        if result is AmendResult.CANCEL:
            self._finish(order, OrderStatus.CANCELED, ts, reason, message)
            return
        if reason is not None:
            self._update(order, ts, reason=reason, message=message)
            return
        order.ts_update_ns = ts
        self._update(order, ts, message="amended")
        if result is AmendResult.REQUEUE:
            self._match_or_rest(order, engine, ts)

    def _on_fill(self, order: SimOrder, price: int, lots: int, maker: bool, ts: int) -> None:
        inst = self.instruments[order.symbol]
        # the fee as the venue charges it and our store keeps it: at its settlement asset's
        # stored scale (Binance's 8 decimals for USDT and BTC), once, here, for the account
        # and the OrderFilled both (the account was debited 0.0102001717, the fill store and
        # the double's commission said 0.01020017: account, portfolio and fills disagreed)
        fee = round_money(inst.fee_quote(price, lots, maker=maker), inst.settle_asset)
        if order.locked:
            ctx = LOCK_CONTEXT
            part = (
                order.locked
                if lots >= order.leaves_lots
                else ctx.divide(ctx.multiply(order.locked, lots), order.leaves_lots).quantize(
                    LOCK_QUANTUM, ROUND_FLOOR, context=ctx
                )
            )
            order.locked = ctx.subtract(order.locked, part)
            self.account.release(lock_asset(inst, order.side), part)
        order.filled_lots += lots
        order.notional_ticks_lots += price * lots
        order.fees_quote += fee
        order.ts_update_ns = ts
        self.account.apply_fill(inst, order.side, price, lots, fee)
        if self._liquidating and order.symbol in self._margin_asset:
            key = (order.symbol, order.agent_id)
            self._agent_lots[key] = self._agent_lots.get(key, 0) + int(order.side) * lots
        self._fill_seq += 1
        fill = OrderFilled(
            ts_event_ns=ts,
            client_order_id=order.client_order_id,
            agent_id=order.agent_id,
            symbol=order.symbol,
            side=order.side,
            price_ticks=price,
            qty_lots=lots,
            fee_quote=fee,
            is_maker=maker,
            fill_id=f"{order.symbol}-{self._fill_seq}",
            leaves_lots=order.leaves_lots,
        )
        self._fills.append(fill)
        self._report_at(ts, fill)
        if order.leaves_lots == 0:
            self._finish(order, OrderStatus.FILLED, ts, None, "")
        else:
            order.status = OrderStatus.PARTIALLY_FILLED

    def _expire_self_trade(self, order: SimOrder, ts: int) -> None:
        """Self-trade prevention ended ``order`` in matching (either side): EXPIRED, as
        Binance ends it (EXPIRED_IN_MATCH), with what it filled before kept."""
        mode = self.config.self_trade.value
        self._finish(order, OrderStatus.EXPIRED, ts, RejectReason.SELF_TRADE, f"self-trade: {mode}")

    def _on_funding(self, event: FundingRate) -> None:
        # the exact mark (x.5 ticks where the spread is odd): int() cut it, a bias against
        # every long's and for every short's funding
        mark = self._mark(event.symbol)
        if mark is None:
            self.ignored_events += 1
            return
        exact = Decimal(mark.numerator) / Decimal(mark.denominator)  # a half at most: exact
        self.account.apply_funding(self.instruments[event.symbol], Decimal(event.rate), exact)

    # -- liquidation ------------------------------------------------------------------------
    def _check_margin(self, symbol: str, ts: int) -> None:
        """After an event on ``symbol``: test the assets whose balance moved, then the
        position in ``symbol`` if its mark left the bounds it was last tested within."""
        if self.account.changed:
            self._test_changed(ts)
        watch = self._watch.get(symbol)
        if watch is None:
            return
        two = self._two_marks(symbol)
        if two is not None and not watch[0] < two < watch[1]:
            self._test_margin(watch[2], ts)

    def _test_changed(self, ts: int) -> None:
        changed = self.account.changed
        assets = sorted(changed.intersection(self._margin_asset.values()))
        changed.clear()
        for asset in assets:
            self._test_margin(asset, ts)

    def _test_margin(self, asset: str, ts: int) -> None:
        """Liquidate ``asset``'s positions if its margin is due, else set the bounds of the
        marks within which it is not tested again: a lone position's exact liquidation
        price; beside others, any move of its mark (theirs move its price)."""
        watch = self._watch
        for symbol, settle in self._margin_asset.items():
            if settle == asset:
                watch.pop(symbol, None)
        symbols = self.account.margin_positions(asset)
        if not symbols:
            return
        marks: dict[str, Fraction] = {}
        for symbol in symbols:
            two = self._two_marks(symbol)
            if two is not None:
                marks[symbol] = Fraction(two, 2)
        if len(marks) < len(symbols):
            # a position with no price (its book emptied, nothing traded): its equity is
            # unknown, so the asset is tested again at the next event on any of them
            for symbol in symbols:
                watch[symbol] = (_NO_BOUND, _NO_BOUND, asset)
            return
        if len(symbols) == 1:
            # a lone position: its liquidation bounds decide, exactly where the margin test
            # would (its equity less maintenance is linear in the mark's units): the margin
            # test and the bounds together took 121 us a fill under cProfile, the bounds 70
            symbol = symbols[0]
            low, high = self.account.liquidation_bounds(symbol, self._maint_rates[symbol])
            mark = marks[symbol]
            if (low is not None and mark <= low) or (high is not None and mark >= high):
                self._liquidate(asset, symbols, marks, ts)
                return
            watch[symbol] = (
                -1 if low is None else math.floor(2 * low),
                _NO_BOUND if high is None else math.ceil(2 * high),
                asset,
            )
            return
        if self.account.margin(asset, marks, self._maint_rates).due:
            self._liquidate(asset, symbols, marks, ts)
            return
        for symbol in symbols:
            two = int(2 * marks[symbol])
            watch[symbol] = (two - 1, two + 1, asset)

    def _liquidate(
        self, asset: str, symbols: list[str], marks: Mapping[str, Fraction], ts: int
    ) -> None:
        """Cancel the account's open orders on ``asset``'s contracts (they lock its margin),
        then close each position at its mark, a tick against the account (a long sells at
        the floor, a short buys at the ceiling), gains first so the balance passes no lower
        than where it ends. The clearance fee, notional x fee rate, takes at most what the
        balance has left after the closes: below zero only past bankruptcy."""
        for order in list(self._orders.values()):
            if order.is_open and self._margin_asset.get(order.symbol) == asset:
                self._finish(
                    order, OrderStatus.CANCELED, ts, RejectReason.LIQUIDATION, "liquidation"
                )
        acct = self.account
        closes: list[tuple[Decimal, str, int]] = []
        for symbol in symbols:
            mark = marks[symbol]
            long = acct.position_state(symbol).qty_lots > 0
            price = max(math.floor(mark), 1) if long else math.ceil(mark)
            closes.append((acct.unrealized_quote(symbol, price), symbol, price))
        closes.sort(key=lambda c: -c[0])  # stable: ties keep the instrument order
        left = acct.balance(asset) + sum(c[0] for c in closes)
        unit = Decimal(1).scaleb(-quote_scale(asset))
        budget = max(left, Decimal(0)).quantize(unit, ROUND_FLOOR)
        for _, symbol, price in closes:
            inst = self.instruments[symbol]
            lots = abs(acct.position_state(symbol).qty_lots)
            fee = round_money(inst.notional_quote(price, lots) * self._fee_rates[symbol], asset)
            fee = min(fee, budget)
            budget -= fee
            self._close(inst, price, fee, unit, ts)

    def _close(self, inst: Instrument, price: int, fee: Decimal, unit: Decimal, ts: int) -> None:
        """Close the position in ``inst`` at ``price``: one fill per agent whose fills built
        it, so each agent's position follows (the rest, if a restore lost whose it was, is
        the venue's: agent ""). The fee falls on the lots that close the account's position,
        pro rata; an agent on the other side only nets against them."""
        symbol = inst.symbol
        qty = self.account.position_state(symbol).qty_lots
        held = {a: n for (s, a), n in self._agent_lots.items() if s == symbol and n}
        rest = qty - sum(held.values())
        if rest:
            held[""] = held.get("", 0) + rest
        # the agents on the account's side first: their fills close it
        closing = [(a, n) for a, n in held.items() if n and (n > 0) == (qty > 0)]
        netting = [(a, n) for a, n in held.items() if n and (n > 0) != (qty > 0)]
        closing_lots = sum(abs(n) for _, n in closing)
        fees: dict[str, Decimal] = {}
        shared = Decimal(0)
        for agent, n in closing[:-1]:
            fees[agent] = (fee * abs(n) / closing_lots).quantize(unit, ROUND_FLOOR)
            shared += fees[agent]
        fees[closing[-1][0]] = fee - shared
        self.liquidations += 1
        cid = f"autoclose-{symbol}-{self.liquidations}"
        order = SimOrder(
            client_order_id=cid,
            agent_id="",
            symbol=symbol,
            side=Side.SELL if qty > 0 else Side.BUY,
            order_type=OrderType.MARKET,
            tif=TimeInForce.IOC,
            limit_ticks=None,
            qty_lots=abs(qty),
            ts_ns=ts,
        )
        order.filled_lots, order.status = abs(qty), OrderStatus.FILLED
        order.notional_ticks_lots, order.fees_quote = price * abs(qty), fee
        self._orders.pop(cid, None)
        self._orders[cid] = order
        self._finished.append((ts, cid))
        for agent, n in [*closing, *netting]:
            side = Side.SELL if n > 0 else Side.BUY
            agent_fee = fees.get(agent, Decimal(0))
            self.account.apply_fill(inst, side, price, abs(n), agent_fee)
            self._agent_lots.pop((symbol, agent), None)
            self._fill_seq += 1
            fill = OrderFilled(
                ts_event_ns=ts,
                client_order_id=cid,
                agent_id=agent,
                symbol=symbol,
                side=side,
                price_ticks=price,
                qty_lots=abs(n),
                fee_quote=agent_fee,
                is_maker=False,
                fill_id=f"{symbol}-{self._fill_seq}",
                liquidation=True,
            )
            self._fills.append(fill)
            self._report_at(ts, fill)

    # -- helpers ----------------------------------------------------------------------------
    def _finish(
        self,
        order: SimOrder,
        status: OrderStatus,
        ts: int,
        reason: RejectReason | None,
        message: str,
    ) -> None:
        engine = self._engines.get(order.symbol)
        if engine is not None:
            engine.remove(order)
        if order.locked:
            inst = self.instruments[order.symbol]
            self.account.release(lock_asset(inst, order.side), order.locked)
            order.locked = Decimal(0)
        order.status = status
        order.reason = reason
        order.ts_update_ns = ts
        if status is OrderStatus.EXPIRED and reason is not RejectReason.SELF_TRADE:
            key = "" if reason is None else reason.value
            self._expiries = {**self._expiries, key: self._expiries.get(key, 0) + 1}
        self._finished.append((ts, order.client_order_id))
        self._update(order, ts, reason=reason, message=message)

    def _reject(self, order: SimOrder, ts: int, reason: RejectReason, message: str) -> None:
        self._finish(order, OrderStatus.REJECTED, ts, reason, message)

    def _update(
        self, order: SimOrder, ts: int, *, reason: RejectReason | None = None, message: str = ""
    ) -> None:
        self._report_at(
            ts,
            OrderUpdate(
                ts_event_ns=ts,
                client_order_id=order.client_order_id,
                agent_id=order.agent_id,
                symbol=order.symbol,
                status=order.status,
                filled_lots=order.filled_lots,
                leaves_lots=0 if order.status.is_final else order.leaves_lots,
                reason=reason,
                message=message,
            ),
        )

    def _push(self, arrive_ns: int, action: Action) -> None:
        self._seq += 1
        if self._observes:  # a constant latency keeps its order by itself
            arrive_ns = self._last_arrive = max(arrive_ns, self._last_arrive)
        heapq.heappush(self._pending, (arrive_ns, self._seq, action))

    def _report_at(self, ts_ns: int, report: ExecutionReport) -> None:
        self._seq += 1
        deliver = ts_ns + self._latency.response_ns(ts_ns)
        if self._observes:
            deliver = self._last_deliver = max(deliver, self._last_deliver)
        heapq.heappush(self._reports, (deliver, self._seq, report))

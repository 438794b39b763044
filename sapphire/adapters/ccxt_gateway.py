"""Live order entry through ccxt's async API, behind :class:`AsyncExecutionGateway`.

Exactly-once placement rests on the client order id (``SubmitOrder.client_order_id``, sent
as Binance ``newClientOrderId``):

* a rate-limited request (429/418) was not executed: wait (``Retry-After``) and resend;
* an ambiguous failure (timeout, dropped connection, 5xx) may have placed the order. The
  gateway waits until the request's ``recvWindow`` has passed (after it the venue refuses a
  late arrival), asks the venue for the order by client id, and resends only when the venue
  does not know it;
* a second ``submit`` of a known client id never places a second order: it reports the
  venue's state of the first.

Ids are run-scoped at the venue (:class:`~sapphire.exchange.order_ids.VenueOrderIds`): a
new run never collides with, nor adopts, another run's orders. A restarted gateway first
calls :meth:`CcxtExchange.recover` with the orders journalled before they were sent: it
checks the API key (balances), tracks the journalled orders, books the fills it missed,
adopts venue orders only when their id is this run's AND side, size and price are the
intent's, and handles every other open order on its symbols by the ``unknown_orders``
policy (halt, cancel or ignore) before any new order leaves.

Reports are de-duplicated per order: an ``OrderFilled`` per venue trade id, an ``OrderUpdate``
only when status or filled quantity changed, and one final state per order, emitted only
once all of its fills have been reported.
"""

from __future__ import annotations

import asyncio
import collections
import difflib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import ccxt.async_support as ccxt_async
import msgspec

from sapphire.adapters.ccxt_credentials import ApiCredentials
from sapphire.adapters.ccxt_retry import Failure, RetryPolicy, Sleep, classify, retry_after_s
from sapphire.adapters.ccxt_tracking import (
    FeeDust,
    TrackedOrder,
    cancel_refused,
    cancel_unconfirmed,
    reject_reason,
)
from sapphire.config.secrets import check_env_name, redact_in_logs
from sapphire.exchange import ccxt_convert as cv
from sapphire.exchange.config import NonNegInt, PositiveInt
from sapphire.exchange.gateway import ExecutionReport
from sapphire.exchange.order_ids import VenueOrderIds, is_sapphire_id
from sapphire.model.instrument import Instrument, Rounding
from sapphire.model.orders import (
    CancelOrder,
    OrderFilled,
    OrderStatus,
    RejectReason,
    SubmitOrder,
    VenueAlert,
)

log = logging.getLogger(__name__)
# an order's trades are read in pages of Binance's largest (1000); the cap bounds one order's
# reads (a million trades), beyond which its state waits for the next reconcile
_TRADE_PAGE = 1000
_MAX_TRADE_PAGES = 1000
T = TypeVar("T")


class UnknownExchangeError(ValueError):
    """An exchange id ccxt does not have; the message names the config field."""


def check_exchange_id(
    exchange_id: str,
    field: str,
    known: Iterable[str] | None = None,
    listing: str = "ccxt.exchanges",
) -> None:
    """Refuses an ``exchange_id`` that is none of ``known`` (default: ccxt's exchanges, which
    ``listing`` names), naming ``field`` and the nearest id: a typo (``binanse``) was an
    AttributeError traceback from the venue actor, after Ray had started."""
    ids = sorted(ccxt_async.exchanges if known is None else known)
    if exchange_id in ids:
        return
    near = difflib.get_close_matches(exchange_id, ids, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f"; the ids are in {listing}"
    raise UnknownExchangeError(f"{field}: unknown ccxt exchange {exchange_id!r}{hint}")


def _default_options() -> dict[str, Any]:
    # Spot only: no futures/margin/sapi endpoints at load_markets time.
    return {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


class CcxtGatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``api_urls`` replace entries of ccxt's ``urls['api']`` (testnet, a local double);
    ``rate_limit_ms`` overrides ccxt's per-request spacing (its limiter stays on)."""

    exchange_id: str = "binance"
    venue: str = "BINANCE"
    credentials_prefix: str = "SAPPHIRE_BINANCE"  # env names only; never a secret here
    timeout_ms: PositiveInt = 10_000
    recv_window_ms: PositiveInt = 5_000
    settle_margin_ms: NonNegInt = 500
    rate_limit_ms: PositiveInt | None = None
    retry: RetryPolicy = RetryPolicy()
    client_id_param: str = "newClientOrderId"
    options: dict[str, Any] = msgspec.field(default_factory=_default_options)
    api_urls: dict[str, Any] = msgspec.field(default_factory=dict)
    sandbox: bool = False
    # open orders on our symbols that this run's journal does not know, found at start:
    # halt (kill switch on, nothing sent until an operator decides), cancel them, or ignore.
    # `cancel` leaves the orders of other Sapphire runs (their tag is not ours) open: one may
    # be alive, trading the same account; `cancel_all` cancels those too (a crashed run's)
    unknown_orders: Literal["halt", "cancel", "cancel_all", "ignore"] = "halt"
    # the account's balances against the run, at start: free settlement asset below the
    # run's capital_quote (every order beyond it meets "insufficient balance"), or spot base
    # assets held that a fresh run starts without (the agents trade as if flat): warn (an
    # alert in the summary), halt (kill switch on until an operator resets it), or ignore
    start_balances: Literal["warn", "halt", "ignore"] = "warn"
    client_id_max_len: PositiveInt = 36
    # how long (wall-clock seconds) an order final at the venue stays tracked: a re-sent
    # submit or a cancel within it is answered from it; the journal keeps orders as long
    # (coordinator.finished_order_memory_s). 0: for ever
    finished_order_memory_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0

    def __post_init__(self) -> None:
        check_env_name("credentials_prefix", self.credentials_prefix)
        if self.timeout_ms <= 0 or self.recv_window_ms <= 0 or self.settle_margin_ms < 0:
            raise ValueError("timeout_ms and recv_window_ms must be > 0, settle_margin_ms >= 0")
        # here as well as before Ray starts (sapphire run): a gateway built by other code
        # is refused as a config, never by getattr on the ccxt module
        check_exchange_id(self.exchange_id, "exchange_id")


class CcxtExchange:
    """Implements :class:`sapphire.exchange.gateway.AsyncExecutionGateway` over ccxt."""

    def __init__(
        self,
        config: CcxtGatewayConfig,
        credentials: ApiCredentials | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        order_ids: VenueOrderIds | None = None,
        system_instruments: Mapping[str, Instrument] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``order_ids``: the run's id scheme; None sends internal ids as they are (a
        gateway used on its own, outside a run). ``system_instruments``: the run's own
        instruments, whose integer quantity unit the gateway must share (see
        :func:`~sapphire.exchange.ccxt_convert.live_units`)."""
        self.config = config
        self.order_ids = order_ids
        self._system_instruments = dict(system_instruments or {})
        if credentials is None:
            credentials = ApiCredentials.from_env(config.credentials_prefix)
        # whatever this process logs from here masks the key and secret (ccxt's errors
        # and debug lines quote requests)
        redact_in_logs(credentials.ccxt_config().values())
        self._key_hint = credentials.api_key_hint
        options = {**config.options, "recvWindow": config.recv_window_ms}
        params: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": config.timeout_ms,
            "options": options,
            **credentials.ccxt_config(),
        }
        if config.rate_limit_ms is not None:
            params["rateLimit"] = config.rate_limit_ms
        self.exchange: Any = getattr(ccxt_async, config.exchange_id)(params)
        # ccxt logs request headers (the API key) at DEBUG: give this instance its own,
        # redacting logger, and never let it print (verbose) anything.
        self.exchange.verbose = False
        self.exchange.logger = credentials.redacting_logger(logging.getLogger(f"{__name__}.ccxt"))
        if config.sandbox:
            self.exchange.set_sandbox_mode(True)
        if config.api_urls:
            self.exchange.urls["api"] = {**self.exchange.urls["api"], **config.api_urls}
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.instruments: dict[str, Instrument] = {}
        self._fee_dust = FeeDust()  # coin fees finer than a lot, until they make one
        self.clock_resyncs = 0  # the venue refused a timestamp and its clock was read again
        self._symbols: dict[str, str] = {}  # sapphire symbol (venue id) -> ccxt symbol
        self._codes: dict[str, tuple[str, str]] = {}  # ccxt's (base, quote) codes
        self._orders: dict[str, TrackedOrder] = {}
        self._by_venue_cid: dict[str, TrackedOrder] = {}
        # the orders not known final (what ``reconcile`` asks about each step), and the
        # final ones by when they were seen final: a long session tracks what is open and
        # the last ``finished_order_memory_s``, not every order it ever placed
        self._open: dict[str, TrackedOrder] = {}
        self._finished: collections.deque[tuple[float, TrackedOrder]] = collections.deque()
        self._clock = clock
        self.unknown_cancels = 0
        self.retries = 0
        self.resubmits = 0
        self._quiet_until = 0.0  # monotonic: the end of a ban the venue announced (``_heed``)

    def __repr__(self) -> str:
        return (
            f"CcxtExchange({self.config.exchange_id!r}, key={self._key_hint!r}, "
            f"instruments={len(self.instruments)}, orders={len(self._orders)})"
        )

    # -- lifecycle --------------------------------------------------------------------------
    async def connect(self) -> dict[str, Instrument]:
        """Load markets: the instruments (tick, lot, min notional) by Sapphire symbol."""
        markets = await self._call(lambda: self.exchange.load_markets())
        for market in markets.values():
            try:
                venue_inst = cv.instrument_from_market(market, self.config.venue)
                cv.check_live_tradeable(venue_inst)
                own = self._system_instruments.get(venue_inst.symbol)
                inst = cv.live_units(venue_inst, own)
            except cv.GridMismatch:
                raise  # trading a symbol on another grid than the run's would misstate sizes
            except (cv.ConversionError, ValueError, KeyError) as exc:
                log.debug("skipping market %s: %s", market.get("symbol"), exc)
                continue
            self.instruments[inst.symbol] = inst
            self._symbols[inst.symbol] = str(market["symbol"])
            self._codes[inst.symbol] = (str(market.get("base")), str(market.get("quote")))
        return dict(self.instruments)

    async def close(self) -> None:
        await self.exchange.close()

    @property
    def ccxt_symbols(self) -> dict[str, str]:
        """Sapphire symbol (the venue's id) -> ccxt's unified symbol."""
        return dict(self._symbols)

    def venue_client_id(self, client_order_id: str) -> str:
        ids = self.order_ids
        return client_order_id if ids is None else ids.venue_id(client_order_id)

    def _new_tracked(self, order: SubmitOrder, *, unresolved: bool = False) -> TrackedOrder:
        venue_cid = self.venue_client_id(order.client_order_id)
        tracked = TrackedOrder(order, venue_cid=venue_cid, unresolved=unresolved)
        self._orders[order.client_order_id] = tracked
        self._by_venue_cid[venue_cid] = tracked
        self._open[order.client_order_id] = tracked
        return tracked

    def _sweep(self) -> None:
        """Move the orders that became final out of the open set, and forget those final
        for longer than ``finished_order_memory_s``."""
        now = self._clock()
        for cid, tracked in list(self._open.items()):
            if tracked.status.is_final:
                del self._open[cid]
                self._finished.append((now, tracked))
        memory = self.config.finished_order_memory_s
        finished = self._finished
        while memory and finished and finished[0][0] + memory <= now:
            _, tracked = finished.popleft()
            cid = tracked.order.client_order_id
            if self._orders.get(cid) is tracked:
                del self._orders[cid]
            if self._by_venue_cid.get(tracked.venue_cid) is tracked:
                del self._by_venue_cid[tracked.venue_cid]

    def track(self, order: SubmitOrder) -> None:
        """Adopt an order sent before a restart (from the order journal); ``reconcile``
        then finds out what became of it."""
        if order.client_order_id not in self._orders:
            self._new_tracked(order, unresolved=True)

    def order_status(self, client_order_id: str) -> OrderStatus | None:
        tracked = self._orders.get(client_order_id)
        return None if tracked is None else tracked.status

    # -- gateway ----------------------------------------------------------------------------
    async def submit(self, order: SubmitOrder) -> Sequence[ExecutionReport]:
        out: list[ExecutionReport] = []
        known = self._orders.get(order.client_order_id)
        if known is not None:
            # A re-send (restart, retry upstream): report the first order, never place twice.
            await self._refresh_quietly(known, out)
            return out
        tracked = self._new_tracked(order)
        inst = self.instruments.get(order.symbol)
        if inst is None:
            why = f"unknown symbol {order.symbol}" if self.instruments else "not connected"
            tracked.finish_rejected(out, RejectReason.UNKNOWN_SYMBOL, why)
            return out
        if not inst.on_lot_step(order.qty_lots):
            # ccxt cuts an amount to the market's step and the venue accepts the smaller
            # order: reported rejected (not our intent), it lived on at the venue untracked
            tracked.finish_rejected(
                out,
                RejectReason.INVALID_LOT,
                f"quantity {inst.lots_to_qty(order.qty_lots)} is not a multiple of the lot "
                f"step {inst.lot_size}",
            )
            return out
        try:
            request = cv.order_request(order, inst)
        except cv.ConversionError as exc:
            tracked.finish_rejected(out, RejectReason.INVALID_TICK, str(exc))
            return out
        tracked.in_flight = True
        try:
            await self._place(tracked, request, out)
        finally:
            tracked.in_flight = False
        return out

    async def _place(
        self,
        tracked: TrackedOrder,
        request: tuple[str, str, float, float | None],
        out: list[ExecutionReport],
    ) -> None:
        order = tracked.order
        kind, side, amount, price = request
        params = cv.order_params(order, self.config.client_id_param, tracked.venue_cid)
        symbol = self._symbols[order.symbol]
        policy = self.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            quiet = self.quiet_left()
            if quiet and attempt == 1:  # nothing sent yet: refused here, never placed
                tracked.finish_rejected(out, RejectReason.EXCHANGE_ERROR, _silence(quiet))
                return
            try:
                placed = await self.exchange.create_order(
                    symbol, kind, side, amount, price, dict(params)
                )
            except ccxt_async.BaseError as exc:
                failure = classify(exc)
                if failure is Failure.FINAL and "Duplicate order" not in str(exc):
                    tracked.finish_rejected(out, reject_reason(exc), _short(exc))
                    return
                wait = self._heed(self._retry_after(exc))
                if failure is not Failure.THROTTLED:
                    # Executed or not? Wait out the recvWindow, then ask by client id.
                    await self._sleep(self._settle_s())
                    try:
                        found = await self._lookup(tracked)
                    except ccxt_async.BaseError as lookup_exc:
                        tracked.unresolved = True  # reconcile() will find out
                        log.warning("order %s state unknown: %s", order.client_order_id, lookup_exc)
                        return
                    if found is not None:
                        await self._apply(tracked, found, out)
                        return
                if policy.too_long(wait):
                    # not executed (refused, or not found after its recvWindow), and the
                    # venue wants no request for longer than a step may wait: this order was
                    # decided on a market that will be gone by then
                    tracked.finish_rejected(
                        out,
                        RejectReason.EXCHANGE_ERROR,
                        f"venue asks to wait {wait:.0f} s (Retry-After) > retry.max_wait_s "
                        f"{policy.max_wait_s:g}; not placed: {_short(exc)}",
                    )
                    return
                if attempt == policy.max_attempts:
                    break
                self.retries += 1
                if failure is not Failure.THROTTLED:
                    self.resubmits += 1
                await self._resync_clock(exc)
                await self._sleep(policy.delay(attempt, self._rng, wait))
                continue
            await self._apply(tracked, placed, out)
            return
        # Every attempt was refused unexecuted or confirmed unknown after its recvWindow.
        tracked.finish_rejected(out, RejectReason.EXCHANGE_ERROR, "venue unavailable; not placed")

    async def cancel(self, cancel: CancelOrder) -> Sequence[ExecutionReport]:
        out: list[ExecutionReport] = []
        tracked = self._orders.get(cancel.client_order_id)
        if tracked is None:
            # Not in this gateway's journal: finished (and pruned) before a restart, or never
            # sent by this run. Its state is unknown here, never "rejected": nothing is
            # reported, the journal keeps what the venue last said.
            self.unknown_cancels += 1
            log.warning("cancel of %s: not an open order of this gateway", cancel.client_order_id)
            return out
        if tracked.status.is_final:
            out.append(cancel_refused(cancel, tracked.status, tracked.order.agent_id, "final"))
            return out
        symbol = self._symbols.get(cancel.symbol)
        if symbol is None:
            out.append(cancel_refused(cancel, tracked.status, tracked.order.agent_id, "symbol"))
            return out
        quiet = self.quiet_left()
        if quiet:  # a cancel sent into a ban is refused too, and lengthens it
            out.append(cancel_unconfirmed(cancel, tracked, f"cancel not sent: {_silence(quiet)}"))
            return out
        params = {"clientOrderId": tracked.venue_cid}
        policy = self.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            try:
                done = await self.exchange.cancel_order(tracked.venue_id, symbol, dict(params))
            except ccxt_async.OrderNotFound:
                # Filled or expired meanwhile, or never placed: the venue's record decides.
                await self._refresh_quietly(tracked, out)
                if not tracked.status.is_final:
                    out.append(
                        cancel_refused(cancel, tracked.status, tracked.order.agent_id, "unknown")
                    )
                return out
            except ccxt_async.BaseError as exc:
                wait = self._heed(self._retry_after(exc))
                final = classify(exc) is Failure.FINAL or policy.too_long(wait)
                if final or attempt == policy.max_attempts:
                    await self._refresh_quietly(tracked, out)
                    if not tracked.status.is_final:
                        msg = f"cancel not confirmed: {_short(exc)}"
                        out.append(cancel_unconfirmed(cancel, tracked, msg))
                    return out
                # Resending a cancel is safe: a repeat of a done cancel is OrderNotFound.
                self.retries += 1
                await self._resync_clock(exc)
                await self._sleep(policy.delay(attempt, self._rng, wait))
                continue
            await self._apply(tracked, done, out)
            return out
        return out  # pragma: no cover - the loop always returns

    async def reconcile(self) -> Sequence[ExecutionReport]:
        """After a reconnect: every non-final order's state and fills, from the venue."""
        out: list[ExecutionReport] = []
        self._sweep()
        pending = list(self._open.values())
        for sapphire_symbol in sorted({t.order.symbol for t in pending}):
            symbol = self._symbols.get(sapphire_symbol)
            if symbol is None:
                continue
            try:
                opened = await self._call(partial(self.exchange.fetch_open_orders, symbol))
            except ccxt_async.BaseError as exc:
                log.warning("open orders of %s unavailable: %s", symbol, exc)
                opened = []
            by_cid = {o.get("clientOrderId"): o for o in opened}
            for tracked in pending:
                if tracked.order.symbol == sapphire_symbol:
                    await self._reconcile_one(tracked, by_cid.get(tracked.venue_cid), out)
        return out

    async def recover(
        self,
        journal: Iterable[SubmitOrder],
        symbols: Iterable[str],
        *,
        sent_before_ns: int = 0,
        capital_quote: Decimal | None = None,
        fresh: bool = True,
    ) -> list[ExecutionReport | VenueAlert]:
        """Start-up reconciliation, before any new order: ``journal`` holds the orders this
        run wrote ahead of sending them (``sent_before_ns``: wall time of the newest write).
        ``capital_quote``: the run's capital, checked against the account's free balance
        (``start_balances``) where the run is ``fresh`` (its first start: a restarted or
        resumed run has spent its capital on what it holds).

        Raises ccxt's AuthenticationError/PermissionDenied when the key is refused (the
        caller ends the run), and any error the retry policy could not get past."""
        now = time.time_ns()
        balance = await self._call(lambda: self.exchange.fetch_balance())
        journal = list(journal)
        for order in journal:
            self.track(order)
        out: list[ExecutionReport | VenueAlert] = []
        reports: list[ExecutionReport] = []
        adopted, mismatched, unknown, cancelled = 0, 0, [], 0
        wanted = sorted({*symbols, *(t.order.symbol for t in self._orders.values())})
        for sapphire_symbol in wanted:
            symbol = self._symbols.get(sapphire_symbol)
            if symbol is None:
                continue
            opened = await self._call(partial(self.exchange.fetch_open_orders, symbol))
            for venue_order in opened:
                tracked = self._by_venue_cid.get(str(venue_order.get("clientOrderId")))
                inst = self.instruments[sapphire_symbol]
                why = "" if tracked is None else cv.matches_intent(tracked.order, venue_order, inst)
                if tracked is not None and not why:
                    await self._apply(tracked, venue_order, reports)
                    adopted += 1
                    continue
                if tracked is not None:
                    mismatched += 1
                    log.error("venue order %s differs from its intent: %s", tracked.venue_cid, why)
                unknown.append((symbol, venue_order))
        # A request sent just before the crash may still arrive: until its recvWindow has
        # passed, "the venue has no such order" is not yet an answer.
        wait_s = (sent_before_ns - now) / 1e9 + self._settle_s()
        if any(t.unresolved for t in self._orders.values()) and sent_before_ns and wait_s > 0:
            await self._sleep(wait_s)
        fills_before = sum(1 for r in reports if isinstance(r, OrderFilled))
        for tracked in list(self._orders.values()):
            if not tracked.status.is_final and tracked.venue_cid not in {
                str(o.get("clientOrderId")) for _, o in unknown
            }:
                await self._reconcile_one(tracked, None, reports)
        missed = sum(1 for r in reports if isinstance(r, OrderFilled))
        policy = self.config.unknown_orders
        ours = self.order_ids.is_ours if self.order_ids is not None else (lambda _: False)
        other_runs: list[tuple[str, cv.CcxtDict]] = []
        no_runs: list[tuple[str, cv.CcxtDict]] = []  # by hand, or by another tool
        for sym, o in unknown:
            cid = o.get("clientOrderId")
            (other_runs if is_sapphire_id(cid) and not ours(cid) else no_runs).append((sym, o))
        to_cancel = {"cancel": no_runs, "cancel_all": unknown}.get(policy, [])
        if policy == "cancel" and other_runs:
            log.warning(
                "%d open order(s) of other Sapphire runs left open (unknown_orders=cancel "
                "cancels only orders no Sapphire run sent; cancel_all cancels them too)",
                len(other_runs),
            )
        for symbol, venue_order in to_cancel:
            try:
                # a cancel is idempotent (a second one finds no order): retried on
                # transient failures (a 429, a timeout) as the reads are
                await self._call(
                    partial(self.exchange.cancel_order, str(venue_order["id"]), symbol)
                )
                cancelled += 1
            except ccxt_async.OrderNotFound:
                cancelled += 1  # gone meanwhile
        out.extend(reports)
        counts = {
            "adopted": adopted,
            "fills_booked": missed,
            "fills_seen_open": fills_before,
            "unknown_orders": len(unknown),
            "other_sapphire_runs": len(other_runs),
            "mismatched": mismatched,
            "unknown_cancelled": cancelled,
            "other_runs_left_open": len(other_runs) if policy == "cancel" else 0,
            "balances": sum(1 for v in (balance.get("total") or {}).values() if v),
        }
        short, held = self._balance_findings(balance, wanted, capital_quote, fresh=fresh)
        counts["capital_short"] = len(short)
        counts["untracked_holdings"] = len(held)
        found = [*short, *held]
        halt_orders = bool(unknown) and policy == "halt"
        halt = halt_orders or (bool(found) and self.config.start_balances == "halt")
        listed = ", ".join(f"{o.get('clientOrderId') or o.get('id')}" for _, o in unknown[:5])
        if found:
            log.warning("start-up balances: %s", "; ".join(found))
        parts = [
            f"{len(unknown)} open order(s) at the venue not in this run's journal ({listed}); "
            "policy unknown_orders=halt: trading halted (cancel them, or set "
            "exchange.params.unknown_orders: cancel)"
            if halt_orders
            else ", ".join(f"{k} {v}" for k, v in counts.items()),
            *found,
        ]
        if found and self.config.start_balances == "halt":
            parts.append("policy start_balances=halt: trading halted")
        message = "; ".join(parts)
        out.append(
            VenueAlert(
                ts_event_ns=now, kind="reconciled", message=message, halt=halt, counts=counts
            )
        )
        return out

    def _balance_findings(
        self,
        balance: cv.CcxtDict,
        symbols: Iterable[str],
        capital_quote: Decimal | None,
        *,
        fresh: bool,
    ) -> tuple[list[str], list[str]]:
        """What the account's balances say against a fresh run (``start_balances``): the
        settlement assets whose free amount is below ``capital_quote``, and the spot base
        assets the account holds (an order step or more) that the run's positions start
        without. Nothing for a restarted or resumed run. Derivative positions are not read
        here."""
        if self.config.start_balances == "ignore" or not fresh:
            return [], []
        free = balance.get("free") or {}
        total = balance.get("total") or {}
        instruments = [self.instruments[s] for s in symbols if s in self.instruments]
        short: list[str] = []
        settle = sorted({i.settle_asset for i in instruments if i.settle_asset})
        if capital_quote is not None and len(settle) == 1:  # one asset the capital is in
            have = Decimal(cv.decimal_text(free.get(settle[0])))
            if have < capital_quote:
                short.append(
                    f"free {settle[0]} {have:f} is below the run's capital_quote "
                    f"{capital_quote.normalize():f}"
                )
        held: list[str] = []
        steps = {i.base: Decimal(i.lot_size) for i in instruments if not i.derivative and i.base}
        for asset, step in sorted(steps.items()):
            amount = Decimal(cv.decimal_text(total.get(asset)))
            if amount >= step:  # dust below an order step (fees' leftovers) trades nothing
                held.append(f"the account holds {amount:f} {asset} this run starts without")
        return short, held

    async def _reconcile_one(
        self, tracked: TrackedOrder, found: cv.CcxtDict | None, out: list[ExecutionReport]
    ) -> None:
        if found is None:
            try:
                found = await self._lookup(tracked)
            except ccxt_async.BaseError as exc:
                log.warning("order %s still unknown: %s", tracked.order.client_order_id, exc)
                return
        if found is not None:
            await self._apply(tracked, found, out)
        elif tracked.unresolved and not tracked.in_flight:
            # Every stale request has outlived its recvWindow: it never executed.
            tracked.finish_rejected(
                out, RejectReason.EXCHANGE_ERROR, "venue has no such order; not placed"
            )

    # -- venue state -> reports ---------------------------------------------------------------
    async def _refresh(self, tracked: TrackedOrder, out: list[ExecutionReport]) -> None:
        found = await self._lookup(tracked)
        if found is not None:
            await self._apply(tracked, found, out)

    async def _refresh_quietly(self, tracked: TrackedOrder, out: list[ExecutionReport]) -> None:
        try:
            await self._refresh(tracked, out)
        except ccxt_async.BaseError as exc:
            log.warning("refresh of %s failed: %s", tracked.order.client_order_id, exc)

    async def _apply(
        self, tracked: TrackedOrder, venue_order: cv.CcxtDict, out: list[ExecutionReport]
    ) -> None:
        inst = self.instruments[tracked.order.symbol]
        why = cv.matches_intent(tracked.order, venue_order, inst)
        if why:
            # Never adopt an order that is not the one we sent, whatever its id says.
            log.error("venue order %s is not our intent (%s): not adopted", tracked.venue_cid, why)
            tracked.finish_rejected(out, RejectReason.EXCHANGE_ERROR, f"venue order differs: {why}")
            return
        tracked.unresolved = False
        if venue_order.get("id") is not None:
            tracked.venue_id = str(venue_order["id"])
        order_ts = cv.ts_ns(venue_order.get("lastUpdateTimestamp") or venue_order.get("timestamp"))
        codes = self._codes[tracked.order.symbol]
        for trade in venue_order.get("trades") or ():
            tracked.add_fill(inst, trade, out, order_ts, codes, self._fee_dust)
        raw_filled = venue_order.get("filled") or 0
        try:
            filled = cv.lots(inst, raw_filled)
        except cv.ConversionError as exc:
            # what the venue executed, on the nearest lot, as add_fill books its trades: an
            # off-grid amount must not stop this order's (and every later one's) reconcile
            log.warning("order %s filled amount off the lot grid: %s", tracked.venue_cid, exc)
            filled = inst.qty_to_lots(cv.decimal_text(raw_filled), Rounding.NEAREST)
        if filled > tracked.fill_lots and tracked.venue_id is not None:
            venue_id = tracked.venue_id
            symbol = self._symbols[tracked.order.symbol]
            try:
                trades = await self._order_trades(symbol, venue_id)
            except ccxt_async.BaseError as exc:
                # The final state waits for these fills; reconcile() fetches them again.
                log.warning("trades of %s unavailable: %s", tracked.order.client_order_id, exc)
                trades = []
            for trade in trades:
                if str(trade.get("order")) == venue_id:
                    tracked.add_fill(inst, trade, out, order_ts, codes, self._fee_dust)
        tracked.update(inst, venue_order, filled, out)

    async def _order_trades(self, symbol: str, venue_id: str) -> list[cv.CcxtDict]:
        """Every trade of one order. Binance answers at most ``limit`` trades a call (500
        when none is given), oldest first: an order that took more liquidity than that
        needs the next page (``fromId``: trades from that id on), else its later fills are
        never booked and it never reaches its final state."""
        trades: list[cv.CcxtDict] = []
        params = {"orderId": venue_id}
        for _ in range(_MAX_TRADE_PAGES):
            fetch = partial(
                self.exchange.fetch_my_trades, symbol, limit=_TRADE_PAGE, params=dict(params)
            )
            page: list[cv.CcxtDict] = await self._call(fetch)
            trades.extend(page)
            ids = [int(t["id"]) for t in page if str(t.get("id") or "").isdigit()]
            if len(page) < _TRADE_PAGE or not ids:
                break
            params["fromId"] = str(max(ids) + 1)
        return trades

    async def _lookup(self, tracked: TrackedOrder) -> cv.CcxtDict | None:
        """The venue's order with this client id, or None when the venue does not know it.

        By client id where the venue supports it (Binance ``origClientOrderId``); else by
        scanning open, then recent closed orders (a closed order older than the venue's
        history window would be missed there)."""
        symbol = self._symbols[tracked.order.symbol]
        cid = tracked.venue_cid
        has = self.exchange.has
        if has.get("fetchOrder"):
            try:
                found: cv.CcxtDict = await self._call(
                    lambda: self.exchange.fetch_order(
                        tracked.venue_id, symbol, {"clientOrderId": cid}
                    )
                )
            except ccxt_async.OrderNotFound:
                return None
            except ccxt_async.NotSupported:
                pass
            else:
                return found
        for capability, method in (
            ("fetchOpenOrders", "fetch_open_orders"),
            ("fetchClosedOrders", "fetch_closed_orders"),
        ):
            if has.get(capability):
                orders = await self._call(partial(getattr(self.exchange, method), symbol))
                for venue_order in orders:
                    if venue_order.get("clientOrderId") == cid:
                        return venue_order  # type: ignore[no-any-return]
        return None

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """An idempotent request (a read, load_markets) with backoff on transient failures."""
        policy = self.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            quiet = self.quiet_left()
            if quiet:
                raise ccxt_async.DDoSProtection(_silence(quiet))
            try:
                return await fn()
            except ccxt_async.BaseError as exc:
                wait = self._heed(self._retry_after(exc))
                if classify(exc) is Failure.FINAL or attempt == policy.max_attempts:
                    raise
                if policy.too_long(wait):
                    raise  # the caller's step must not stall on a venue's long ban
                self.retries += 1
                await self._resync_clock(exc)
                await self._sleep(policy.delay(attempt, self._rng, wait))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _resync_clock(self, exc: BaseException) -> None:
        """A request refused for its timestamp (Binance -1021, ccxt's InvalidNonce): the
        host's clock is off the venue's by more than a second, and every signed request
        would be refused the same way, retried or not. The client's offset to the venue's
        clock (``/time``) is measured again before the retry; it signs with it from then."""
        if not isinstance(exc, ccxt_async.InvalidNonce):
            return
        sync = getattr(self.exchange, "load_time_difference", None)
        if sync is None:
            return
        try:
            await sync()
        except ccxt_async.BaseError as sync_exc:
            log.warning("venue clock: %s; resync failed: %s", _short(exc), _short(sync_exc))
            return
        self.clock_resyncs += 1
        offset = self.exchange.options.get("timeDifference", 0)
        log.warning("venue clock: %s; host clock now corrected by %s ms", _short(exc), offset)

    def _retry_after(self, exc: BaseException) -> float | None:
        """The venue's Retry-After for ``exc``: only a throttling answer carries one. ccxt
        keeps the last response's headers, so a timeout (no response) read the ban's own
        429 again, after the ban, and started it anew."""
        if not isinstance(exc, ccxt_async.DDoSProtection | ccxt_async.RateLimitExceeded):
            return None
        return retry_after_s(getattr(self.exchange, "last_response_headers", None))

    def _heed(self, wait: float | None) -> float | None:
        """A Retry-After longer than a step may wait is a ban (Binance's 429 then 418, two
        minutes up to three days): no request of any kind before it ends. Every one sent
        meanwhile (each step's reconcile, lookups, orders) lengthened it."""
        if self.config.retry.too_long(wait):
            assert wait is not None
            self._quiet_until = max(self._quiet_until, time.monotonic() + wait)
        return wait

    def quiet_left(self) -> float:
        """Seconds of the venue's ban still to wait (0: none); also read by whoever builds
        the next gateway (a start-up tried again must not knock during the ban either)."""
        return max(0.0, self._quiet_until - time.monotonic())

    def _settle_s(self) -> float:
        return (self.config.recv_window_ms + self.config.settle_margin_ms) / 1000


def _short(exc: BaseException) -> str:
    return str(exc)[:300]


def _silence(left_s: float) -> str:
    return f"the venue asked for silence (Retry-After): {left_s:.0f} s left; no request sent"

"""LiveExecutionActor: the execution actor for a real venue through ccxt.

Same step contract as :class:`actors.execution.ExecutionActor`, so the coordinator does not
know which one it drives. The venue is the source of truth, and what this actor sent is
written ahead: every order is in the write-ahead journal (``order-wal``, in the run's
checkpoint store) before it leaves, and leaves the journal once the venue reports it final.

On every start (a new run, Ray restarting the actor, ``--resume`` after a crash) the gateway
reconciles with the venue before the first command is sent: the API key is checked, the
journal's orders are tracked again and their missed fills booked, and open orders nobody
here sent are handled by the ``unknown_orders`` policy. What it found reaches the
coordinator as a :class:`~sapphire.model.orders.VenueAlert` (halt -> kill switch; a refused
key -> the run ends as failed). A retried step re-sends the same client order ids, which the
gateway resolves against the venue instead of placing them twice; ``reconcile`` (every step)
reports fills and final states of resting orders, de-duplicated downstream by fill id.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import ray

from actors.checkpoint import make_store
from actors.codec import decode_messages, encode_messages
from actors.stepper import AsyncStepper
from sapphire.exchange.gateway import venue_error_report
from sapphire.kernel.timing import Window
from sapphire.model.orders import CancelOrder, OrderStatus, SubmitOrder, VenueAlert

if TYPE_CHECKING:
    from sapphire.adapters.ccxt_gateway import CcxtGatewayConfig
    from sapphire.model.instrument import Instrument

log = logging.getLogger(__name__)

WAL_KEY = "order-wal"


START_RETRY_FIRST_S = 1.0
START_RETRY_MAX_S = 60.0


class _Waiting(RuntimeError):
    """The venue refused the start a moment ago: the next try is not due yet."""


def _transient(exc: BaseException) -> bool:
    """A start-up failure worth trying again: throttled or no answer (not a refusal)."""
    from sapphire.adapters.ccxt_retry import Failure, classify

    return classify(exc) is not Failure.FINAL


async def _close_quietly(gateway: Any) -> None:
    close = getattr(gateway, "close", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # closing what failed to start: nothing more to do
        log.debug("closing a gateway that failed to start", exc_info=True)


class WalEntry(msgspec.Struct, frozen=True, kw_only=True):
    order: SubmitOrder
    written_ns: int  # wall clock of the journal write (its sends may come later: retries)


def build_ccxt(
    config: CcxtGatewayConfig, run_id: str, instruments: dict[str, Instrument] | None = None
) -> Any:
    """The live venue of run ``run_id`` (what ``actors.wiring.live_gateway_builder`` hands the
    actor). Here, beside the actor, and not in the wiring: the actor unpickles it, and the
    wiring's module would bring the replay's libraries into the venue's process."""
    from sapphire.adapters.ccxt_gateway import CcxtExchange
    from sapphire.exchange.order_ids import VenueOrderIds

    # credentials come from the environment (or secret files) of the worker, never the config;
    # client order ids carry the run's tag, so no other run's orders are ever taken for ours
    ids = VenueOrderIds(run_id, max_len=config.client_id_max_len)
    # the run's instruments: order quantities are counted in their units, and a venue whose
    # tick or lot step disagrees is refused at connect rather than trading 1,000x off
    return CcxtExchange(config, order_ids=ids, system_instruments=instruments)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class LiveExecutionActor:
    def __init__(
        self,
        build_gateway: Any,
        checkpoint_location: str,
        symbols: tuple[str, ...] = (),
        capital_quote: str = "",
    ) -> None:
        self._build_gateway = build_gateway
        self._symbols = symbols
        # checked against the account's free balance at start (the gateway's start_balances)
        self._capital = Decimal(capital_quote) if capital_quote else None
        self.gateway: Any = None
        self.errors = 0
        self.orders_sent = 0
        self.reconciliation: dict[str, int] = {}
        self._store = make_store(checkpoint_location)
        data = self._store.load(WAL_KEY)
        self._wal: dict[str, WalEntry] = {
            e.order.client_order_id: e
            for e in (msgspec.msgpack.decode(data, type=list[WalEntry]) if data else [])
        }
        self._startup: list[Any] = []
        self._failed = ""
        # a start-up the venue refused for a while (429, 5xx, unreachable): why, how many
        # tries so far, and when (monotonic) the next may be made
        self._unavailable = ""
        self._start_tries = 0
        self._retry_at = 0.0
        self._banned_s = 0.0  # the ban the last failed start's client saw (Retry-After)
        # set by a reconciliation that found orders nobody here sent (policy halt): no new
        # order leaves this incarnation until the operator resets the kill switch
        self._halt = ""
        self._stepper: AsyncStepper[bytes] = AsyncStepper(
            self._store, "execution", lambda: b"", lambda _: None
        )

    async def _connected(self) -> Any:
        if self.gateway is None:
            gateway = self._build_gateway()
            try:
                return await self._start(gateway)
            except BaseException:
                # a ban the venue announced outlives this client: the next start waits it out
                quiet = getattr(gateway, "quiet_left", None)
                self._banned_s = float(quiet()) if callable(quiet) else 0.0
                await _close_quietly(gateway)  # a half-started client's connections
                raise
        return self.gateway

    async def _start(self, gateway: Any) -> Any:
        """Connect and reconcile; the gateway is this actor's once both succeeded."""
        await gateway.connect()
        # a journalled order's last send may be much later than its entry (retries,
        # Retry-After waits, the step's other orders): the one bound on when the previous
        # incarnation last sent anything is now, when it is gone; an order can still
        # reach the venue until its recvWindow after that
        sent_before = time.time_ns() if self._wal else 0
        # reconciled before any command of this incarnation leaves
        self._startup = list(
            await gateway.recover(
                [e.order for e in self._wal.values()],
                self._symbols,
                sent_before_ns=sent_before,
                capital_quote=self._capital,
                # its first start: no checkpointed step (a restart, a --resume) and nothing
                # journalled (a journal holds only orders still open)
                fresh=not self._stepper.restored and not self._wal,
            )
        )
        for alert in self._startup:
            if isinstance(alert, VenueAlert):
                self.reconciliation = dict(alert.counts)
                self._halt = alert.message if alert.halt else ""
        self.gateway = gateway
        return self.gateway

    async def prepare(self) -> bytes:
        """Connect and reconcile now (the coordinator calls this before its first step, so
        a halt binds before any agent decides). What the reconciliation found is also
        returned by the next step (duplicates are dropped downstream by fill id): a
        coordinator that dies before checkpointing loses none of it."""
        now = time.time_ns()
        try:
            await self._connected()
        except Exception as exc:
            return encode_messages([self._start_failed(exc, now)])
        return encode_messages(self._startup)

    def clear_halt(self) -> None:
        """The operator reset the kill switch: orders may leave again."""
        self._halt = ""

    def _start_failed(self, exc: Exception, now_ns: int) -> VenueAlert:
        why = f"venue start-up failed: {type(exc).__name__}: {str(exc)[:200]}"
        if _transient(exc):
            # a 429, a 5xx, a timeout: the venue is there, not now. One such answer ended
            # the run for good; the start is tried again after 1, 2, 4 ... 60 s, and no
            # order leaves meanwhile (each is refused with the reason, as when halted)
            self._start_tries += 1
            wait = min(START_RETRY_MAX_S, START_RETRY_FIRST_S * 2 ** (self._start_tries - 1))
            wait = max(wait, self._banned_s)  # never a request into the venue's ban
            self._retry_at = time.monotonic() + wait
            self._unavailable = f"{why} (try {self._start_tries}; again in {wait:g} s)"
            log.warning("%s", self._unavailable)
            return VenueAlert(ts_event_ns=now_ns, kind="start", message=self._unavailable)
        self._failed = why  # a refused key, a permission, a market that is not there
        log.error("%s", self._failed)
        return VenueAlert(ts_event_ns=now_ns, kind="start", message=self._failed, fatal=True)

    def _write_ahead(self, orders: list[SubmitOrder]) -> None:
        if not orders:
            return
        now = time.time_ns()
        for order in orders:
            self._wal.setdefault(order.client_order_id, WalEntry(order=order, written_ns=now))
        self._store.save(WAL_KEY, msgspec.msgpack.encode(list(self._wal.values())), durable=True)

    def _prune(self) -> None:
        done = [c for c in self._wal if _final(self.gateway.order_status(c))]
        if done:
            for cid in done:
                del self._wal[cid]
            self._store.save(WAL_KEY, msgspec.msgpack.encode(list(self._wal.values())))

    async def step(
        self, step: int, window: Window, events: bytes, commands: bytes, barrier: bool = True
    ) -> bytes:
        # a window is what arrived; reports are stamped when they came back (live time). A
        # live run makes every step a barrier: what left for the venue cannot be replayed.
        return await self._stepper.run_async(
            step, lambda: self._compute(commands, window.end_ns - 1), barrier=barrier
        )

    async def rewind(self, step: int) -> int:
        self._stepper.rewind(step)
        return self._stepper.last_step

    async def _compute(self, commands_data: bytes, now_ns: int) -> bytes:
        commands = decode_messages(commands_data)
        submits = [c for c in commands if isinstance(c, SubmitOrder)]
        try:
            if self._failed:
                raise RuntimeError(self._failed)
            if self.gateway is None and time.monotonic() < self._retry_at:
                raise _Waiting(self._unavailable)
            gateway = await self._connected()
        except Exception as exc:  # a refused key, a venue unreachable after every retry
            fresh = not self._failed and not isinstance(exc, _Waiting)
            alert = self._start_failed(exc, now_ns) if fresh else None
            # the commands of this step never leave: each is refused with the reason
            refused = [venue_error_report(c, exc, now_ns) for c in submits]
            return encode_messages([*([alert] if alert else []), *refused])
        # Orders final by the last committed step leave the journal now, never within the
        # step that finished them: a crash after that step's pruning but before its checkpoint
        # replays it with the order gone from the journal, and would send it again.
        self._prune()
        reports: list[Any] = self._startup
        self._startup = []
        if self._halt:  # decided before the halt was known: refused, never sent
            halted = RuntimeError(f"halted by venue reconciliation: {self._halt}")
            reports.extend(venue_error_report(c, halted, now_ns) for c in submits)
            commands = [c for c in commands if not isinstance(c, SubmitOrder)]
        self._write_ahead([c for c in commands if isinstance(c, SubmitOrder)])
        for command in commands:
            try:
                if isinstance(command, SubmitOrder):
                    self.orders_sent += 1
                    reports.extend(await gateway.submit(command))
                elif isinstance(command, CancelOrder):
                    reports.extend(await gateway.cancel(command))
            except Exception as exc:  # the venue's failure becomes a reject, never a crash
                self.errors += 1
                log.warning("venue error on %s: %s", command.client_order_id, exc)
                if isinstance(command, SubmitOrder):
                    reports.append(venue_error_report(command, exc, now_ns))
        try:
            reports.extend(await gateway.reconcile())
        except Exception as exc:
            self.errors += 1
            log.warning("reconcile failed, retried next step: %s", exc)
        return encode_messages(reports)

    async def stats(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "orders_sent": self.orders_sent,
            "last_step": self._stepper.last_step,
            "restored": self._stepper.restored,
            "wal_orders": len(self._wal),
            "reconciliation": dict(self.reconciliation),
            "failed": self._failed,
        }

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()


def _final(status: OrderStatus | None) -> bool:
    return status is not None and status.is_final

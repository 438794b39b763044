"""Every assumption of the paper exchange, named in one frozen config (and a builder for it)."""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation
from typing import Annotated

import msgspec

from sapphire.model.instrument import Instrument

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class QueueModelKind(enum.StrEnum):
    """How our resting order's place in the recorded queue is estimated (L2 data hides it)."""

    CONSERVATIVE = "conservative"  # only trades advance us; cancels are assumed behind us
    PROB_POWER = "prob_power"  # cancels split ahead/behind with f(x) = x**power
    PROB_LOG = "prob_log"  # f(x) = log(1 + x)
    PROB_POWER3 = "prob_power3"  # P(behind) = 1 - (front / (front + back)) ** power


class LatencyKind(enum.StrEnum):
    CONSTANT = "constant"
    RECORDED = "recorded"  # ts_recv_ns - ts_event_ns of the latest recorded event, scaled


class SelfTradeMode(enum.StrEnum):
    """Binance's STP names: which side of a would-be self-trade is expired, in matching, where
    the taker's walk reaches our resting order (``MatchingEngine.take``); the expired order
    ends EXPIRED, reason SELF_TRADE (Binance: EXPIRED_IN_MATCH)."""

    EXPIRE_TAKER = "expire_taker"  # the incoming order's remainder expires; ours rests on
    EXPIRE_MAKER = "expire_maker"  # our resting orders met expire; the incoming one goes on
    EXPIRE_BOTH = "expire_both"


class QuoteBookMode(enum.StrEnum):
    """Whether the venue builds a symbol's book from its quotes (best bid and offer)."""

    AUTO = "auto"  # quote-driven until the symbol's first depth event, then depth-driven
    OFF = "off"  # quotes never move the book: a symbol without depth offers no liquidity


class QueueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: QueueModelKind = QueueModelKind.CONSERVATIVE
    power: PositiveFloat = 2.0


class LatencyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Latencies in ns. ``RECORDED`` uses the latest event's feed lag (floored at ``floor_ns``)
    times ``entry_scale``/``response_scale`` for order entry and response; the constants are
    the fallback before any recorded lag is seen.

    The trading kernel (``sapphire.kernel``) reads the same block as the run's timing:
    ``feed_ns`` (an event becomes visible to agents), ``decision_ns`` (agent and risk time
    from seeing something to the order leaving; the venue itself ignores it), ``entry_ns``
    (to the matching engine) and ``response_ns`` (the venue's report back). In a system
    config, ``entry_ns`` and ``response_ns`` left out are 1 ms each (a co-located client;
    the lookahead is their minimum), whether the block is left out or only some of its
    fields; the kernel refuses 0 for either (no window would be exact). The 0 defaults
    below are a venue's built alone (``PaperExchangeBuilder``), acting at once."""

    kind: LatencyKind = LatencyKind.CONSTANT
    feed_ns: NonNegInt = 0
    decision_ns: NonNegInt = 0
    entry_ns: NonNegInt = 0
    response_ns: NonNegInt = 0
    entry_scale: PositiveFloat = 1.0
    response_scale: PositiveFloat = 1.0
    floor_ns: NonNegInt = 0


class ImpactConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Our taker fills hide the displayed volume they took; it comes back linearly over
    ``recovery_ns``. Off by default: a recorded book does not know we traded."""

    enabled: bool = False
    recovery_ns: PositiveInt = 1_000_000_000


class LiquidationConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The venue liquidates as Binance USDT-M and Bybit do (cross margin per settlement
    asset): when an account's margin balance in an asset (its balance + the unrealized PnL
    of its perpetual and futures positions settled in it, at the venue's mark) falls to or
    below their maintenance margin (notional at the mark x the maintenance rate), its open
    orders on those contracts are canceled and every such position is closed at the mark,
    rounded a tick against the account, with the clearance fee (notional closed x fee
    rate) capped at what the balance has left: it goes below zero only where the price
    gapped past bankruptcy (``balances_below_zero``). Spot and options are never liquidated.

    Each instrument's own rates (``maint_margin_rate``, ``liquidation_fee_rate``: from
    the venue's metadata where it states them) come first; these are the defaults for the
    others. ``maint_margin_rate``: Binance USDT-M BTCUSDT's first leverage bracket, 0.4 %
    (its maintMarginRatio up to 50,000 USDT notional). ``fee_rate``: Binance USDT-M BTCUSDT's
    ``liquidationFee`` in the recorded exchangeInfo of 2021-07-22, 1.2 %."""

    # false: no liquidation; a loss past the margin takes the balance below zero
    enabled: bool = True
    # fraction of the notional at the mark, for instruments whose metadata states none
    maint_margin_rate: str = "0.004"
    # fraction of the notional closed, for instruments whose metadata states none
    fee_rate: str = "0.012"

    def __post_init__(self) -> None:
        for field in ("maint_margin_rate", "fee_rate"):
            text = getattr(self, field)
            try:
                value = Decimal(text)
            except InvalidOperation as exc:
                raise ValueError(f"liquidation.{field} is not a decimal: {text!r}") from exc
            if not value.is_finite() or not 0 <= value < 1:
                raise ValueError(f"liquidation.{field} must be a fraction in [0, 1): {text!r}")


class PaperExchangeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``balances`` are decimal strings per asset (money rule). ``leverage`` applies to
    perpetuals (initial margin = notional / leverage); ``liquidation`` closes them at their
    maintenance margin. ``trade_through_fills_all``: a recorded
    trade strictly beyond our resting price fills the whole order (the market traded through
    us); ``book_cross_fills``: a recorded level at or beyond our resting price fills us up to
    that level's displayed size (it would have traded with us)."""

    instruments: tuple[Instrument, ...]
    balances: dict[str, str] = msgspec.field(default_factory=dict)
    queue: QueueConfig = QueueConfig()
    latency: LatencyConfig = LatencyConfig()
    impact: ImpactConfig = ImpactConfig()
    self_trade: SelfTradeMode = SelfTradeMode.EXPIRE_TAKER
    leverage: PositiveInt = 1
    liquidation: LiquidationConfig = LiquidationConfig()
    trade_through_fills_all: bool = True
    book_cross_fills: bool = True
    # Where a symbol's book comes from when its data has quotes (book ticker, BBO) but no
    # depth. auto: each quote sets the book to its one level a side (a zero size or a
    # missing side empties that side), so orders match against the quoted sizes, until the
    # symbol's first depth event (snapshot or diff); from then on the book is the depth
    # book and quotes are ignored, never both. off: quotes never move the book. Why:
    # ignoring quotes left a quotes-and-trades recording (Tardis quotes, a nautilus
    # parquet, hftbacktest BBO) with no book at all, and every market order expired
    # no_liquidity. Levels behind the quote are unknown to such a book (it shows none).
    book_from_quotes: QuoteBookMode = QuoteBookMode.AUTO
    # How long (venue time) the venue remembers an order after it is final: a cancel or
    # amend of it is answered with its status until then, and its client order id counts as
    # used; then it is forgotten, as a real venue archives closed orders (Binance asks client
    # order ids to be unique among open orders only). Why: keeping every order made a run's
    # memory and each checkpoint grow with the run (a quoting market maker sends ~170,000
    # orders a day). 0: never forget.
    finished_order_memory_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0

    def __post_init__(self) -> None:
        symbols = [i.symbol for i in self.instruments]
        if not symbols:
            raise ValueError("PaperExchangeConfig needs at least one instrument")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate instrument symbols: {symbols}")
        for asset, amount in self.balances.items():
            try:
                value = Decimal(amount)
            except InvalidOperation as exc:
                raise ValueError(f"balance of {asset} is not a decimal: {amount!r}") from exc
            if not value.is_finite() or value < 0:
                raise ValueError(f"balance of {asset} must be a finite decimal >= 0: {amount!r}")
        for inst in self.instruments:
            if not inst.base or not inst.quote:
                raise ValueError(f"{inst.symbol}: instrument needs base and quote assets")
            if not (self.liquidation.enabled and inst.liquidatable):
                continue
            rate = Decimal(inst.maint_margin_rate or self.liquidation.maint_margin_rate)
            if rate * self.leverage >= 1:
                # a venue caps leverage well under this (Binance: initial margin twice the
                # maintenance); here every position would be liquidated as it opened
                raise ValueError(
                    f"{inst.symbol}: leverage {self.leverage} leaves an initial margin "
                    f"(1/{self.leverage}) no larger than its maintenance margin {rate}"
                )


class PaperExchangeBuilder:
    """Fluent assembly of a :class:`PaperExchangeConfig`, one named assumption per call::

    PaperExchangeBuilder().instrument(btc).balance("USDT", "10000")
        .power_prob_queue(2.0).constant_latency(entry_ns=5_000_000).build()
    """

    def __init__(self) -> None:
        self._instruments: list[Instrument] = []
        self._balances: dict[str, str] = {}
        self._queue = QueueConfig()
        self._latency = LatencyConfig()
        self._impact = ImpactConfig()
        self._stp = SelfTradeMode.EXPIRE_TAKER
        self._leverage = 1
        self._liquidation = LiquidationConfig()
        self._trade_through = True
        self._book_cross = True
        self._quote_book = QuoteBookMode.AUTO

    def instrument(self, instrument: Instrument) -> PaperExchangeBuilder:
        self._instruments.append(instrument)
        return self

    def balance(self, asset: str, amount: str | Decimal) -> PaperExchangeBuilder:
        self._balances[asset] = str(amount)
        return self

    def conservative_queue(self) -> PaperExchangeBuilder:
        self._queue = QueueConfig(kind=QueueModelKind.CONSERVATIVE)
        return self

    def power_prob_queue(self, power: float = 2.0) -> PaperExchangeBuilder:
        self._queue = QueueConfig(kind=QueueModelKind.PROB_POWER, power=power)
        return self

    def log_prob_queue(self) -> PaperExchangeBuilder:
        self._queue = QueueConfig(kind=QueueModelKind.PROB_LOG)
        return self

    def power3_prob_queue(self, power: float = 3.0) -> PaperExchangeBuilder:
        self._queue = QueueConfig(kind=QueueModelKind.PROB_POWER3, power=power)
        return self

    def constant_latency(
        self, *, entry_ns: int = 0, response_ns: int = 0, feed_ns: int = 0
    ) -> PaperExchangeBuilder:
        self._latency = LatencyConfig(
            kind=LatencyKind.CONSTANT, entry_ns=entry_ns, response_ns=response_ns, feed_ns=feed_ns
        )
        return self

    def recorded_latency(
        self,
        *,
        entry_scale: float = 1.0,
        response_scale: float = 1.0,
        floor_ns: int = 0,
        fallback_ns: int = 0,
    ) -> PaperExchangeBuilder:
        self._latency = LatencyConfig(
            kind=LatencyKind.RECORDED,
            entry_scale=entry_scale,
            response_scale=response_scale,
            floor_ns=floor_ns,
            feed_ns=fallback_ns,
            entry_ns=fallback_ns,
            response_ns=fallback_ns,
        )
        return self

    def market_impact(self, recovery_ns: int = 1_000_000_000) -> PaperExchangeBuilder:
        self._impact = ImpactConfig(enabled=True, recovery_ns=recovery_ns)
        return self

    def self_trade(self, mode: SelfTradeMode) -> PaperExchangeBuilder:
        self._stp = mode
        return self

    def leverage(self, leverage: int) -> PaperExchangeBuilder:
        self._leverage = leverage
        return self

    def liquidation(self, liquidation: LiquidationConfig) -> PaperExchangeBuilder:
        self._liquidation = liquidation
        return self

    def fill_rules(
        self, *, trade_through_fills_all: bool, book_cross_fills: bool
    ) -> PaperExchangeBuilder:
        self._trade_through = trade_through_fills_all
        self._book_cross = book_cross_fills
        return self

    def book_from_quotes(self, mode: QuoteBookMode) -> PaperExchangeBuilder:
        self._quote_book = mode
        return self

    def config(self) -> PaperExchangeConfig:
        return PaperExchangeConfig(
            instruments=tuple(self._instruments),
            balances=dict(self._balances),
            queue=self._queue,
            latency=self._latency,
            impact=self._impact,
            self_trade=self._stp,
            leverage=self._leverage,
            liquidation=self._liquidation,
            trade_through_fills_all=self._trade_through,
            book_cross_fills=self._book_cross,
            book_from_quotes=self._quote_book,
        )

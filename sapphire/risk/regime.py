"""Risk modes (calm / normal / stressed) from the market's recent past, and the limit scale each
one puts on the agents' pre-trade limits.

A regime is read from features of one symbol's marks over a lookback (realised volatility of
sampled mids, mean quoted spread, the move and the drawdown over the lookback), computed only
from samples known at the decision time: a bar counts from its close, never from its open.
A classifier maps features to a regime; ``risk.regime.scales`` maps a regime to a factor in
(0, 1] that multiplies an agent's max position, max notional and max order size on that
symbol (:func:`scaled_limits`). The factor can only tighten a limit, never loosen it: the
configured limits are the ceiling whatever a classifier says.

Two classifiers share one interface (:class:`RegimeClassifier`): :class:`RuleClassifier`
(thresholds, the baseline) and an LLM one (``sapphire.agents.regime``), whose every invalid
answer falls back to the rules and is counted.

Pure: no clock, no I/O. :class:`RegimeMonitor` is what the coordinator core runs, event by
event in time order, so a regime change lands at the same event in every runner and window.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections import deque
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Protocol

import msgspec

from sapphire.model.events import AnyMarketEvent, Bar, BookSnapshot, Quote, Trade

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # limits imports this module for its config
    from sapphire.risk.limits import AgentLimits

NS = 1_000_000_000

Regime = Literal["calm", "normal", "stressed"]
REGIMES: tuple[Regime, ...] = ("calm", "normal", "stressed")

Scale = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0.0)]


class RegimeScales(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limit factor of each regime, in (0, 1]: 1 keeps the configured limits."""

    calm: Scale = 1.0
    normal: Scale = 1.0
    stressed: Scale = 0.5

    def of(self, regime: Regime) -> float:
        return float(getattr(self, regime))


class RegimeThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The rule baseline. ``volatility_bps`` is the standard deviation of the returns between
    consecutive samples (per sample interval); ``move_bps`` bounds both the absolute return
    over the lookback and the drawdown from its peak; 0 turns a test off."""

    stressed_volatility_bps: NonNegFloat = 12.0
    calm_volatility_bps: NonNegFloat = 4.0
    stressed_spread_bps: NonNegFloat = 0.0
    stressed_move_bps: NonNegFloat = 0.0

    def __post_init__(self) -> None:
        if self.calm_volatility_bps > self.stressed_volatility_bps > 0:
            raise ValueError(
                f"calm_volatility_bps ({self.calm_volatility_bps}) must not exceed "
                f"stressed_volatility_bps ({self.stressed_volatility_bps})"
            )


class RegimeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``risk.regime``: scale the agents' limits by the market's risk mode (off by default,
    so a run without it is unchanged).

    Every ``evaluate_every_s`` of event time per symbol, features over ``lookback_s`` of mids
    sampled every ``sample_interval_s`` go to the classifier; its regime's scale applies to
    every agent's limits on that symbol until the next evaluation. Fewer than ``min_samples``
    samples (warm-up) count as ``normal``. ``classifier: llm`` asks a language model in
    process (``llm``: a llama.cpp engine config, {} = the shipped SmolLM2-135M Q4 GGUF),
    greedy and grammar-constrained, falling back to the rules on any invalid answer.
    """

    enabled: bool = False
    # rules: the thresholds below; llm: the model, with the rules deciding what it cannot
    classifier: Literal["rules", "llm"] = "rules"
    # how far back the features look, in event time
    lookback_s: Annotated[int, msgspec.Meta(gt=0)] = 3600
    # one mid sample per interval: volatility is of the returns between samples
    sample_interval_s: Annotated[int, msgspec.Meta(gt=0)] = 60
    # how often each symbol's regime is decided, in event time
    evaluate_every_s: Annotated[int, msgspec.Meta(gt=0)] = 300
    # fewer samples in the lookback (warm-up): normal
    min_samples: Annotated[int, msgspec.Meta(ge=3)] = 10
    thresholds: RegimeThresholds = RegimeThresholds()
    scales: RegimeScales = RegimeScales()
    # llama.cpp engine fields for classifier llm ({}: SmolLM2-135M Q4, 2 threads, greedy)
    llm: dict[str, Any] = msgspec.field(default_factory=dict)
    # classifier llm, an event before the model's knowledge cutoff: warn (flagged in the
    # summary and the stored decision), strict (never asked: the rules decide), off
    point_in_time: Literal["off", "warn", "strict"] = "warn"


# -- scaling ------------------------------------------------------------------------------------


def clamp_scale(scale: float) -> float:
    """Any number as a factor in [0, 1]: above 1 (or +inf) keeps the limits, NaN and
    non-positive values are the tightest (a bad input must not loosen anything)."""
    if math.isnan(scale) or scale <= 0.0:
        return 0.0
    return min(scale, 1.0)


_SATOSHI = Decimal("0.00000001")


def scale_money(amount: Decimal, scale: float) -> Decimal:
    """``amount`` x ``scale``, rounded down to 8 decimals and never above ``amount``."""
    s = clamp_scale(scale)
    if s >= 1.0:
        return amount
    with localcontext() as ctx:  # room for any configured amount at 8 decimals
        ctx.prec = max(ctx.prec, len(amount.as_tuple().digits) + 40)
        scaled = (amount * Decimal(repr(s))).quantize(_SATOSHI, rounding=ROUND_DOWN)
    return min(scaled, amount)


def scaled_limits(limits: AgentLimits, scale: float) -> AgentLimits:
    """An ``AgentLimits`` with its max position, notional and order size multiplied by
    ``scale`` (rounded down). A scale of 1 returns ``limits`` itself. The order size keeps at
    least one lot (of a limit that has one), so an agent can still reduce its position when
    the new-exposure limits are scaled to nothing; it never exceeds the configured size."""
    s = clamp_scale(scale)
    if s >= 1.0:
        return limits
    order = limits.max_order_lots
    return msgspec.structs.replace(
        limits,
        max_position_lots=min(limits.max_position_lots, math.floor(limits.max_position_lots * s)),
        max_order_lots=min(order, max(1, math.floor(order * s))) if order > 0 else 0,
        max_notional_quote=f"{scale_money(Decimal(limits.max_notional_quote), s):f}",
    )


# -- features -----------------------------------------------------------------------------------


class RegimeFeatures(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One symbol's features at ``ts_event_ns`` from samples known no later than ``as_of_ns``."""

    symbol: str
    ts_event_ns: int
    samples: int
    volatility_bps: float
    """Standard deviation of the returns between consecutive samples, in bps."""
    spread_bps: float
    """Mean quoted spread over the lookback (0 where the symbol has no quotes: bars, trades)."""
    trend_bps: float
    """Return from the lookback's first sample to the latest, in bps."""
    drawdown_bps: float
    """From the lookback's highest sample to the latest, in bps (>= 0)."""
    as_of_ns: int
    """When the newest sample used was known."""


class _Sample(NamedTuple):
    known_ns: int
    mid: float
    spread_bps: float


class RegimeTracker:
    """Mid (and spread) samples per symbol, one per ``sample_interval_ns``, kept for the
    lookback. A sample is stamped with when it was known: a quote or trade at its event time,
    a bar at its close."""

    def __init__(self, lookback_ns: int, sample_interval_ns: int) -> None:
        self.lookback_ns = lookback_ns
        self.sample_interval_ns = sample_interval_ns
        self._samples: dict[str, deque[_Sample]] = {}
        self._quoted: set[str] = set()

    def observe(self, event: AnyMarketEvent) -> None:
        kind = type(event)
        spread = 0.0
        if kind is Quote:
            q: Quote = event  # type: ignore[assignment]
            if q.bid_ticks <= 0 or q.ask_ticks <= q.bid_ticks:
                return
            mid = (q.bid_ticks + q.ask_ticks) / 2
            spread = (q.ask_ticks - q.bid_ticks) / mid * 1e4
            self._quoted.add(q.symbol)
            known = q.ts_event_ns
        elif kind is BookSnapshot:
            s: BookSnapshot = event  # type: ignore[assignment]
            if not s.bids or not s.asks or s.asks[0][0] <= s.bids[0][0]:
                return
            mid = (s.bids[0][0] + s.asks[0][0]) / 2
            spread = (s.asks[0][0] - s.bids[0][0]) / mid * 1e4
            self._quoted.add(s.symbol)
            known = s.ts_event_ns
        elif kind is Trade:
            t: Trade = event  # type: ignore[assignment]
            if t.symbol in self._quoted or t.price_ticks <= 0:
                return
            mid, known = float(t.price_ticks), t.ts_event_ns
        elif kind is Bar:
            b: Bar = event  # type: ignore[assignment]
            if b.symbol in self._quoted or b.close_ticks <= 0:
                return
            mid, known = float(b.close_ticks), b.ts_event_ns  # a bar is stamped at its close
        else:
            return
        samples = self._samples.get(event.symbol)
        if samples is None:
            samples = self._samples[event.symbol] = deque()
        if samples and known - samples[-1].known_ns < self.sample_interval_ns:
            return
        samples.append(_Sample(known, mid, spread))
        # keep one sample older than the lookback: the base of the lookback's return
        horizon = known - self.lookback_ns - self.sample_interval_ns
        while len(samples) > 2 and samples[1].known_ns < horizon:
            samples.popleft()

    def features(self, symbol: str, now_ns: int) -> RegimeFeatures | None:
        """Features from the samples known at ``now_ns`` within the lookback (None: none)."""
        samples = self._samples.get(symbol)
        if not samples:
            return None
        start = now_ns - self.lookback_ns
        window = [s for s in samples if start <= s.known_ns <= now_ns]
        if not window:
            return None
        mids = [s.mid for s in window]
        rets = [(b / a - 1.0) * 1e4 for a, b in itertools.pairwise(mids)]
        vol = 0.0
        if len(rets) >= 2:
            mean = sum(rets) / len(rets)
            vol = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
        peak = max(mids)
        return RegimeFeatures(
            symbol=symbol,
            ts_event_ns=now_ns,
            samples=len(window),
            volatility_bps=vol,
            spread_bps=sum(s.spread_bps for s in window) / len(window),
            trend_bps=(mids[-1] / mids[0] - 1.0) * 1e4,
            drawdown_bps=(1.0 - mids[-1] / peak) * 1e4 if peak > 0 else 0.0,
            as_of_ns=window[-1].known_ns,
        )


# -- classifiers --------------------------------------------------------------------------------


class RegimeCall(NamedTuple):
    """A classifier's answer: the regime, who decided (``rules``, ``llm``, ``fallback``,
    ``warmup``) and, for a fallback, why the model's answer was not used."""

    regime: Regime
    source: str
    error: str = ""


class RegimeClassifier(Protocol):
    name: str

    def classify(self, features: Sequence[RegimeFeatures]) -> list[RegimeCall]:
        """One call per features, in order; never raises on a bad model answer."""


class RuleClassifier:
    """The baseline: stressed when any of volatility, spread or move is at or over its
    threshold, calm when volatility is under the calm one, normal otherwise."""

    name = "rules"

    def __init__(self, thresholds: RegimeThresholds) -> None:
        self.thresholds = thresholds

    def regime(self, f: RegimeFeatures) -> Regime:
        th = self.thresholds
        move = max(abs(f.trend_bps), f.drawdown_bps)
        if (
            (th.stressed_volatility_bps > 0 and f.volatility_bps >= th.stressed_volatility_bps)
            or (th.stressed_spread_bps > 0 and f.spread_bps >= th.stressed_spread_bps)
            or (th.stressed_move_bps > 0 and move >= th.stressed_move_bps)
        ):
            return "stressed"
        if f.volatility_bps < th.calm_volatility_bps:
            return "calm"
        return "normal"

    def classify(self, features: Sequence[RegimeFeatures]) -> list[RegimeCall]:
        return [RegimeCall(self.regime(f), self.name) for f in features]


def build_classifier(config: RegimeConfig) -> RegimeClassifier:
    """The classifier ``config`` names (the LLM one loads its model here)."""
    rules = RuleClassifier(config.thresholds)
    if config.classifier == "rules":
        return rules
    # imported here: the LLM classifier loads a model backend
    from sapphire.agents.regime import llm_regime_classifier

    try:
        return llm_regime_classifier(config.llm, rules, config.point_in_time)
    except Exception as exc:  # a model that will not load, minutes into a run
        # it was built at the first evaluation, inside the coordinator's step, and raised
        # there: the run failed. The rules decide now, every call a counted fallback.
        return UnloadedClassifier(rules, f"error: model failed to load: {exc}"[:300])


class UnloadedClassifier:
    """Stands in for an LLM classifier whose model did not load: the rules' regime, each
    call a fallback with the reason, counted as an engine error in the LLM stats (the LLM
    classifier's own counts: one rebuilt after a restore carries a snapshot's on, its
    ``before_cutoff`` among them)."""

    name = "llm"

    def __init__(self, rules: RuleClassifier, reason: str) -> None:
        from sapphire.agents.regime import RegimeStats  # imports this module

        self.rules = rules
        self.reason = reason
        self.stats = RegimeStats()
        log.error("risk.regime.llm: %s; the rules classify instead", reason)

    def classify(self, features: Sequence[RegimeFeatures]) -> list[RegimeCall]:
        self.stats.errors += len(features)
        return [RegimeCall(self.rules.regime(f), "fallback", self.reason) for f in features]


# -- the coordinator's monitor --------------------------------------------------------------------


class RegimeMonitor:
    """Folds market events in time order and, every ``evaluate_every_s`` of event time per
    symbol, classifies that symbol; :meth:`on_event` returns the new limit scale when one is
    due. The classifier (a model, for ``llm``) is not part of the snapshot: it is rebuilt
    from the config on first use after a restore. Its counts are (``stats``): the summary's
    LLM figures, the point-in-time warning's ``before_cutoff`` among them, restarted at zero
    on every restore, and a resumed run's summary could skip that warning."""

    def __init__(self, config: RegimeConfig, classifier: RegimeClassifier | None = None) -> None:
        self.config = config
        self.tracker = RegimeTracker(config.lookback_s * NS, config.sample_interval_s * NS)
        self._every_ns = config.evaluate_every_s * NS
        self._next_ns: dict[str, int] = {}
        self.current: dict[str, Regime] = {}
        self.evaluations: dict[str, int] = {}
        """Per source (``rules``, ``llm``, ``fallback``, ``warmup``)."""
        self.by_regime: dict[str, int] = dict.fromkeys(REGIMES, 0)
        self.changes = 0
        self._classifier = classifier
        self._saved_stats: Any = None
        """A restored snapshot's classifier counts, until a classifier is rebuilt to carry
        them on."""

    @property
    def classifier(self) -> RegimeClassifier:
        if self._classifier is None:
            classifier = build_classifier(self.config)
            _carry_stats(self._saved_stats, classifier)
            self._saved_stats = None
            self._classifier = classifier
        return self._classifier

    def _stats(self) -> Any:
        """The classifier's counts: the live classifier's, or the snapshot's before one is
        rebuilt (None: a classifier that counts nothing, the rules)."""
        if self._classifier is None:
            return self._saved_stats
        return getattr(self._classifier, "stats", None)

    def on_event(self, event: AnyMarketEvent) -> tuple[str, float] | None:
        self.tracker.observe(event)
        symbol, now = event.symbol, event.ts_event_ns
        if now < self._next_ns.get(symbol, -(1 << 62)):
            return None
        self._next_ns[symbol] = now - now % self._every_ns + self._every_ns
        features = self.tracker.features(symbol, now)
        if features is None or features.samples < self.config.min_samples:
            call = RegimeCall("normal", "warmup")
        else:
            call = self.classifier.classify([features])[0]
        self.evaluations[call.source] = self.evaluations.get(call.source, 0) + 1
        self.by_regime[call.regime] += 1
        if self.current.get(symbol) != call.regime:
            self.changes += 1
        self.current[symbol] = call.regime
        return symbol, self.config.scales.of(call.regime)

    def take_records(self) -> list[Any]:
        """The classifier's decisions since the last call (an LLM's, to be stored as an
        LLM agent's are; none for the rules)."""
        take = getattr(self._classifier, "take_records", None)
        return take() if take is not None else []

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "classifier": self.config.classifier,
            "evaluations": dict(sorted(self.evaluations.items())),
            "by_regime": dict(self.by_regime),
            "changes": self.changes,
            "current": dict(sorted(self.current.items())),
        }
        stats = self._stats()
        if stats is not None:
            out["llm"] = msgspec.structs.asdict(stats)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_classifier"] = None
        stats = self._stats()
        # a copy: the live classifier keeps counting after the snapshot is taken
        state["_saved_stats"] = None if stats is None else copy.copy(stats)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_saved_stats", None)  # a snapshot from before the counts were kept
        self.__dict__.update(state)


def _carry_stats(saved: Any, classifier: RegimeClassifier) -> None:
    """Add a snapshot's counts to a rebuilt classifier's, field by field: the rebuilt one
    may count in another struct (a model that no longer loads counts in ``DecisionStats``)."""
    stats = getattr(classifier, "stats", None)
    if saved is None or stats is None:
        return
    for name in saved.__struct_fields__:
        before = getattr(saved, name)
        if isinstance(before, int) and isinstance(getattr(stats, name, None), int):
            setattr(stats, name, getattr(stats, name) + before)

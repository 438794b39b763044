"""The backtest configuration (``sapphire backtest --config FILE``), validated once."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from sapphire.agents.bar_policy import StakeConfig
from sapphire.backtest.bar_gateway import BarCosts


class BacktestConfigError(ValueError):
    """A backtest config that cannot be run; the message names the field."""


class AgentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str
    id: str = "agent-1"
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class InstrumentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # "": each OHLCV file's own symbol, from its name (one symbol for several files labelled
    # Bitstamp BTC/USD bars "ETHBTC" in their report)
    symbol: str = ""
    tick_size: str | None = None  # None: inferred from the OHLCV file
    lot_size: str | None = None
    base: str = ""
    quote: str = ""
    # a bar backtest's fees are costs.fee_bps (its venue charges those); set here they were
    # ignored without a word, so they are refused (None: not set)
    maker_fee_bps: str | None = None
    taker_fee_bps: str | None = None


class TickData(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One hftbacktest session: depth (for the paper exchange), BBO and trades (for agents)."""

    depth: str
    bbo: str
    trades: str
    session: str
    seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0


class PaperSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    balances: dict[str, str] = msgspec.field(default_factory=dict)
    entry_latency_ns: Annotated[int, msgspec.Meta(ge=0)] = 0
    response_latency_ns: Annotated[int, msgspec.Meta(ge=0)] = 0


class BacktestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    agent: AgentSpec
    instrument: InstrumentSpec
    engine: Literal["vectorized", "event"] = "event"
    ohlcv: list[str] = msgspec.field(default_factory=list)
    ticks: TickData | None = None
    costs: BarCosts = BarCosts()
    stake: StakeConfig = StakeConfig(stake_lots=1)
    paper: PaperSpec = PaperSpec()
    # cash of an agent that is no indicator strategy (those take stake.initial_cash)
    initial_cash: Decimal | None = None
    mark_interval_ns: Annotated[int, msgspec.Meta(ge=0)] = 1_000_000_000
    max_bars: Annotated[int, msgspec.Meta(gt=0)] | None = None
    output_dir: str = "reports"

    @property
    def starting_cash(self) -> Decimal:
        """The agent's cash at the start: an indicator strategy's stake, else
        ``initial_cash`` (10,000 where not set)."""
        if self.agent.kind.startswith("indicator:"):
            return self.stake.initial_cash
        return Decimal(10_000) if self.initial_cash is None else self.initial_cash

    def __post_init__(self) -> None:
        if self.ticks is not None:
            raise BacktestConfigError(
                "tick data runs as a system config on the trading kernel (the file `sapphire "
                "run` reads: data, agents, exchange, risk), with the same risk, venue and "
                "timing as every runner; see configs/backtest_avellaneda_stoikov.yaml"
            )
        cash = self.initial_cash
        is_bar = self.agent.kind.startswith("indicator:")
        if cash is not None and (not cash.is_finite() or cash <= 0):
            raise BacktestConfigError(f"initial_cash must be > 0, got {cash}")
        if cash is not None and is_bar:
            raise BacktestConfigError(
                "initial_cash: an indicator strategy's cash is stake.initial_cash (this one "
                "was ignored)"
            )
        if is_bar and "stake" in self.agent.params:
            # the vectorized engine sized by the top-level stake, the event engine by this
            # one, and its initial_cash could exceed the ledger's: hidden leverage
            raise BacktestConfigError(
                "agent.params.stake: a bar backtest's stake is the top-level 'stake' (one "
                "stake for both engines and the ledger)"
            )
        spec = self.instrument
        for field in ("tick_size", "lot_size"):
            # checked here, not first by Instrument() in the runner: its error named neither
            # the file nor the field, and came out as a traceback
            _check_step(field, getattr(spec, field))
        if spec.maker_fee_bps is not None or spec.taker_fee_bps is not None:
            raise BacktestConfigError(
                "instrument.maker_fee_bps/taker_fee_bps: a bar backtest's fees are "
                "costs.fee_bps (these were ignored)"
            )
        if bool(self.ohlcv) == (self.ticks is not None):
            raise BacktestConfigError("set exactly one data source: 'ohlcv' (files) or 'ticks'")
        if self.engine == "vectorized" and not (is_bar and self.ohlcv):
            raise BacktestConfigError(
                "engine 'vectorized' runs bar strategies (kind 'indicator:...') on 'ohlcv' data"
            )
        if self.ticks is not None and is_bar:
            raise BacktestConfigError("indicator strategies need 'ohlcv' data, not 'ticks'")
        if self.ticks is not None and (
            self.instrument.tick_size is None or self.instrument.lot_size is None
        ):
            raise BacktestConfigError("'ticks' data needs instrument.tick_size and lot_size")
        if self.ticks is not None and not self.instrument.symbol:
            raise BacktestConfigError("'ticks' data needs instrument.symbol")


def _check_step(field: str, text: str | None) -> None:
    """``instrument.<field>``, where set: a finite decimal > 0 (a price or size grid step)."""
    if text is None:  # inferred from the OHLCV file
        return
    try:
        value = Decimal(text)
    except ArithmeticError:  # "abc", "": decimal.InvalidOperation
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0:
        raise BacktestConfigError(
            f"instrument.{field} must be a decimal number > 0 (the grid step), got {text!r}"
        )


def parse_config(data: object) -> BacktestConfig:
    try:
        return msgspec.convert(data, BacktestConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise BacktestConfigError(f"invalid backtest config: {exc}") from exc

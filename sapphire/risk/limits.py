"""Risk limit configuration: typed, validated once, with clear errors."""

from __future__ import annotations

from typing import Annotated

import msgspec

from sapphire.risk.regime import RegimeConfig

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegDecimalStr = Annotated[str, msgspec.Meta(pattern=r"^\d+(\.\d+)?$")]


class AgentLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-agent, per-symbol caps. ``max_position_lots`` bounds |position + open orders|;
    ``max_notional_quote`` bounds |position| x price plus the order's notional.

    Lots are order steps (the instrument's ``lot_size``), as agents' ``order_lots`` are,
    whatever finer grid the venue reports sizes on (``size_increment``).

    Money limits are in each instrument's settlement asset (``Instrument.settle_asset``):
    the quote for spot and linear contracts, the coin for inverse ones, where the notional
    is contracts x size / price, valued at the lower of the order's price and the mark
    (an inverse contract is worth more coin the lower the price). Why not convert at the
    mark: PnL, fees and the daily-loss limits of an inverse contract are coin too, and a
    cap in another unit would tighten or loosen with the price.
    """

    max_position_lots: NonNegInt = 1_000_000
    max_notional_quote: NonNegDecimalStr = "1000000"
    max_order_lots: NonNegInt = 1_000_000
    max_orders_per_second: PositiveInt = 50
    max_daily_loss_quote: NonNegDecimalStr = "1000000"


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Firm-wide limits plus defaults and per-agent overrides.

    ``price_band_bps`` rejects limit orders further than that from mid on the aggressive
    side (fat-finger guard). ``kill_on_daily_loss`` trips the kill switch when the firm-wide
    loss limit is breached, not only rejecting new orders.
    """

    price_band_bps: PositiveInt = 500
    max_firm_daily_loss_quote: NonNegDecimalStr = "1000000"
    kill_on_daily_loss: bool = True
    # Signal aggregation applied: an order against the agents' weighted consensus on its
    # symbol stronger than this (in [0, 1]) is denied; 0 = off.
    consensus_gate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    default_agent: AgentLimits = AgentLimits()
    agents: dict[str, AgentLimits] = msgspec.field(default_factory=dict)
    # risk modes that scale max position / notional / order size down (never up); off = none
    regime: RegimeConfig = RegimeConfig()

    def for_agent(self, agent_id: str) -> AgentLimits:
        return self.agents.get(agent_id, self.default_agent)

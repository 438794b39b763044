"""The bar-strategy trading rules shared by the vectorized engine and the bar-driven agent.

One function decides the next position state from a bar's signals, one sizes entries. Both
engines call exactly these, which is what makes their trades identical (tested on real data).

Rules (freqtrade's, simplified): signals are read at a bar's close and executed at the next
bar's open. An exit and an entry on the same bar cancel the entry. The stop-loss is checked
on closes against the entry fill price (``stoploss = -0.10`` exits once the close is 10 %
below a long entry), so it also executes at the next open, never intrabar.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Annotated

import msgspec

from sapphire.model.instrument import Instrument


class StakeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Entry size: a fixed number of lots, or a fraction of equity marked at the signal close."""

    stake_lots: Annotated[int, msgspec.Meta(gt=0)] | None = None
    stake_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    initial_cash: Decimal = Decimal(10_000)

    def __post_init__(self) -> None:
        if (self.stake_lots is None) == (self.stake_fraction is None):
            raise ValueError("set exactly one of stake_lots and stake_fraction")
        if not self.initial_cash.is_finite() or self.initial_cash <= 0:
            raise ValueError(f"initial_cash must be > 0, got {self.initial_cash}")


def next_state(
    state: int,
    entry_ticks: int,
    close_ticks: int,
    enter_long: bool,
    exit_long: bool,
    enter_short: bool,
    exit_short: bool,
    stoploss: float,
    can_short: bool,
) -> int:
    """Position state after this bar's close: 1 long, -1 short, 0 flat.

    A position closed on this bar (signal or stop) is not re-opened on the same side.
    """
    closed = 0
    if state == 1:
        if not (exit_long or close_ticks <= entry_ticks * (1.0 + stoploss)):
            return 1
        closed = 1
    elif state == -1:
        if not (exit_short or close_ticks >= entry_ticks * (1.0 - stoploss)):
            return -1
        closed = -1
    if enter_long and not exit_long and closed != 1:
        return 1
    if can_short and enter_short and not exit_short and closed != -1:
        return -1
    return 0


def entry_lots(
    stake: StakeConfig, equity_quote: Decimal, close_ticks: int, inst: Instrument
) -> int:
    """Lots to enter with at the signal bar's close (0 when equity cannot buy one order step,
    or the fixed ``stake_lots`` at that close).

    Always whole order steps: ``stake_lots`` counts order steps (``lot_size``), which are
    ``lots_per_step`` integer lots where the book's size grid is finer (``size_increment``)."""
    step = inst.lots_per_step
    if stake.stake_lots is not None:
        # a fixed stake the equity cannot pay is no trade (freqtrade refuses a stake over
        # the wallet): it traded on, into negative equity, as hidden leverage
        lots = stake.stake_lots * step
        if equity_quote <= 0 or inst.notional_quote(close_ticks, lots) > equity_quote:
            return 0
        return lots
    assert stake.stake_fraction is not None
    per_step = inst.notional_quote(close_ticks, step)
    if per_step <= 0 or equity_quote <= 0:
        return 0
    budget = equity_quote * Decimal(repr(stake.stake_fraction))
    return int((budget / per_step).to_integral_value(ROUND_FLOOR)) * step

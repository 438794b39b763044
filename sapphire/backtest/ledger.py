"""Cash, position and equity book-keeping shared by both backtest engines (exact Decimal cash)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import polars as pl

from sapphire.model.events import Side
from sapphire.model.instrument import Instrument


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution as the backtest books it. ``ref_ticks`` is the mid (or bar open) at the
    time of the fill, the reference for spread captured and slippage."""

    ts_event_ns: int
    side: Side
    price_ticks: int
    qty_lots: int
    fee_quote: Decimal
    is_maker: bool
    ref_ticks: float
    position_after: int


class BacktestResult(msgspec.Struct, kw_only=True):
    symbol: str
    initial_cash: Decimal
    final_equity: Decimal
    fills: list[Fill]
    equity_ts: list[int]
    equity: list[float]
    position: list[int]
    orders_submitted: int = 0
    orders_filled: int = 0
    orders_rejected: int = 0
    cancels: int = 0
    signals: int = 0
    events: int = 0
    periods_per_year: float = 0.0
    # the equity point the ratios start from: a bar strategy's last warm-up close (its
    # flat warm-up bars diluted the Sharpe by ~sqrt(traded/total), and tune, which scores
    # from there, ranked the same trades with another Sharpe)
    scored_from: int = 0


class Ledger:
    def __init__(self, instrument: Instrument, initial_cash: Decimal) -> None:
        if instrument.inverse:
            # its float equity curve (and the vectorized engine's, bit for bit) is linear in
            # the price; refusing beats a curve ~price^2 off. The kernel (`sapphire backtest
            # --config`) books inverse contracts.
            raise ValueError(
                f"{instrument.symbol}: the research backtester is linear-only; run inverse "
                "contracts with `sapphire backtest --config`"
            )
        self.instrument = instrument
        self.initial_cash = initial_cash
        self.cash = initial_cash
        self.position = 0
        self.fills: list[Fill] = []
        self.equity_ts: list[int] = []
        self.equity: list[float] = []
        self.positions: list[int] = []
        # The equity curve is float (reporting and analytics); computing it from float cash
        # and one product per mark keeps marking cheap. Cash and final equity stay exact.
        # Money of one tick x one lot by the instrument's money rule (x contract_size).
        self._unit = instrument.value_per_ticklot()
        self.unit_float = float(self._unit)
        self.cash_float = float(initial_cash)

    def apply(
        self,
        ts_ns: int,
        side: Side,
        price_ticks: int,
        qty_lots: int,
        fee_quote: Decimal,
        *,
        is_maker: bool,
        ref_ticks: float,
    ) -> None:
        notional = self.instrument.notional_quote(price_ticks, qty_lots)
        self.cash += -notional if side is Side.BUY else notional
        self.cash -= fee_quote
        self.cash_float = float(self.cash)
        self.position += int(side) * qty_lots
        self.fills.append(
            Fill(
                ts_event_ns=ts_ns,
                side=side,
                price_ticks=price_ticks,
                qty_lots=qty_lots,
                fee_quote=fee_quote,
                is_maker=is_maker,
                ref_ticks=ref_ticks,
                position_after=self.position,
            )
        )

    def equity_at(self, mark_ticks: int | float) -> Decimal:
        if self.position == 0:
            return self.cash
        if isinstance(mark_ticks, float):
            return self.cash + self.instrument.position_value(
                Decimal(repr(mark_ticks)), self.position
            )
        return self.cash + self.instrument.position_value(mark_ticks, self.position)

    def equity_float(self, mark_ticks: int | float) -> float:
        """Equity for the curve: ``cash + float(mark * position) * value_per_ticklot`` in floats
        (the vectorized engine computes the same in bulk, bit for bit)."""
        if not self.position:
            return self.cash_float
        return self.cash_float + float(mark_ticks * self.position) * self.unit_float

    def mark(self, ts_ns: int, mark_ticks: int | float) -> None:
        self.equity_ts.append(ts_ns)
        self.equity.append(self.equity_float(mark_ticks))
        self.positions.append(self.position)

    def result(self, last_mark_ticks: int | float, **counters: int | float) -> BacktestResult:
        return BacktestResult(
            symbol=self.instrument.symbol,
            initial_cash=self.initial_cash,
            final_equity=self.equity_at(last_mark_ticks),
            fills=self.fills,
            equity_ts=self.equity_ts,
            equity=self.equity,
            position=self.positions,
            **counters,  # type: ignore[arg-type]
        )


def fills_frame(result: BacktestResult, inst: Instrument) -> pl.DataFrame:
    """The trades table: one row per fill, prices and quantities in instrument units."""
    return pl.DataFrame(
        {
            "ts_event_ns": [f.ts_event_ns for f in result.fills],
            "side": [f.side.name.lower() for f in result.fills],
            "price": [float(inst.ticks_to_price(f.price_ticks)) for f in result.fills],
            "qty": [float(inst.lots_to_qty(f.qty_lots)) for f in result.fills],
            "fee_quote": [float(f.fee_quote) for f in result.fills],
            "is_maker": [f.is_maker for f in result.fills],
            "position_after": [float(inst.lots_to_qty(f.position_after)) for f in result.fills],
        },
        schema_overrides={"ts_event_ns": pl.Int64, "price": pl.Float64, "qty": pl.Float64},
    )


def equity_frame(result: BacktestResult) -> pl.DataFrame:
    """The equity curve with the position (lots) at each mark."""
    return pl.DataFrame(
        {
            "ts_event_ns": result.equity_ts,
            "equity": result.equity,
            "position_lots": result.position,
        },
        schema={"ts_event_ns": pl.Int64, "equity": pl.Float64, "position_lots": pl.Int64},
    )


def fees_paid(result: BacktestResult) -> Decimal:
    return sum((f.fee_quote for f in result.fills), Decimal(0))

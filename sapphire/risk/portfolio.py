"""Positions and PnL per (agent, symbol), folded from fills. Exact: lots and Decimal cash.

Cash is in each instrument's settlement asset (the quote for linear, the coin for inverse):
entries are averaged in the instrument's price units (ticks, or -1/ticks for inverse), so
the same fold gives linear PnL and inverse PnL ``contracts x size x (1/entry - 1/exit)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

import msgspec

from sapphire.model.instrument import Instrument, InstrumentKind
from sapphire.model.orders import OrderFilled, Position

_ZERO = Decimal(0)
# The grid a position's cost is kept on (price units x lots): 1e-30 of a tick-lot, far below
# what any money figure shows (28 significant digits, 8-9 decimals stored). An exact
# Fraction grew without bound while a position never went flat: each partial close scaled
# it by remaining/qty and each inverse fill added a 1/price, so by 100k fills its
# denominator had 26,735 bits and a fill or a mark cost milliseconds.
_COST_GRID = 10**30


def _on_grid(cost: Fraction) -> Fraction:
    if _COST_GRID % cost.denominator == 0:
        return cost  # already on it (every linear add: whole tick-lots)
    return Fraction(round(cost * _COST_GRID), _COST_GRID)


# Dollar assets read at par with each other when converting a coin to the firm's currency:
# an inverse BTCUSD contract's price (USD per BTC) is the only BTC price a COIN-M run may
# have, and the stablecoin/USD basis (a few bps) is far below what a firm loss limit means.
_DOLLARS = frozenset({"USD", "USDT", "USDC"})
# A conversion price comes from the instrument that tracks the spot price most closely: an
# option's mark is a premium, never a price of its underlying.
_PRICE_KINDS = {
    InstrumentKind.SPOT: 0,
    InstrumentKind.PERPETUAL: 1,
    InstrumentKind.INVERSE_PERPETUAL: 1,
    InstrumentKind.FUTURE: 2,
    InstrumentKind.INVERSE_FUTURE: 2,
}


class FirmPnl(msgspec.Struct, frozen=True, kw_only=True):
    """The firm's PnL: exact per settlement asset, and one figure in the firm's currency.

    ``total`` adds each asset's PnL converted at its current mark (``rates``: the asset's
    price in ``asset``); assets in ``missing`` had no conversion mark yet and are left out
    of ``total`` (never added as if they were ``asset``), so ``partial`` says it is short.
    """

    asset: str
    total: Decimal
    by_asset: dict[str, Decimal]
    rates: dict[str, Decimal]
    missing: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def reporting_asset(instruments: Mapping[str, Instrument], currency: str = "") -> str:
    """The firm's currency, the asset ``capital_quote`` and every money limit are read in:
    ``currency`` (the config's, checked by :func:`currency_choices`) where set, else a rule
    on the instruments: the settlement asset when there is one; else a settlement asset
    that is also a quote (USDT beside BTC-settled inverse contracts), a dollar first, then
    the one most instruments settle in (BTCUSDT beside ETHBTC is a USDT firm: the first in
    the alphabet made it a BTC one, its capital and loss limit read in BTC); else the quote
    most instruments share (USD for COIN-M). The override exists because the rule moves
    with the instruments: one USDC-settled perp added beside BitMEX XBTUSD turned a
    ``capital_quote`` of 1 BTC into 1 USDC, and every order was refused over its cap.

    Where that pick cannot value every settlement asset (:func:`unvalued`), the next asset
    of the instruments that can is taken: BTC-settled options quoted in USD with no BTC/USD
    instrument made a USD firm whose capital no price of the run converted into BTC, and
    risk refused every order. Where none can, the pick stands (``firm_currency`` refuses
    such a run before it starts)."""
    if currency:
        return currency
    settled = [i.settle_asset for i in instruments.values()]
    settles = sorted(set(settled))
    if len(settles) <= 1:
        return settles[0] if settles else ""  # every cash figure is in it: nothing to value
    quotes = [i.quote for i in instruments.values() if i.quote]
    quoted = [a for a in settles if a in quotes]
    if quoted:
        pick = min(quoted, key=lambda a: (a not in _DOLLARS, -settled.count(a), a))
    elif not quotes:
        pick = settles[0]
    else:
        pick = min(sorted(set(quotes)), key=lambda q: -quotes.count(q))
    # the pick first, then its rule's own order: settled before quoted only, dollars first;
    # a dollar beside a dollar too (a USDT base prices a coin in USDT, not in USD)
    ranked = sorted(
        currency_choices(instruments),
        key=lambda a: (
            a != pick,
            a not in settles,
            a not in _DOLLARS,
            -settled.count(a),
            -quotes.count(a),
            a,
        ),
    )
    return next((a for a in ranked if not unvalued(a, instruments)), pick)


def same_money(a: str, b: str) -> bool:
    return a == b or (a in _DOLLARS and b in _DOLLARS)


def currency_choices(instruments: Mapping[str, Instrument]) -> list[str]:
    """The assets a firm of ``instruments`` may name as its currency (config ``currency``):
    each asset they settle in or quote, and the dollars beside any dollar (read at par,
    ``same_money``): the money its accounts are kept in or its prices are read in. Not a
    base only (ETH of ETHUSDT): that is what the run trades, not what it counts in."""
    assets = {a for i in instruments.values() for a in (i.settle_asset, i.quote) if a}
    if assets & _DOLLARS:
        assets |= _DOLLARS
    return sorted(assets)


def _prices(inst: Instrument, asset: str, into: str) -> int:
    """The one conversion rule: 1 where ``inst`` prices one ``asset`` in ``into`` (its base
    is ``asset``, its quote ``into``'s money), -1 where it prices one ``into`` in ``asset``
    (the rate is 1 / its price), 0 where it is no price of one in the other (an option's
    premium, a pair of other assets). One instrument, never a chain: a rate through a third
    asset would multiply two marks of different times."""
    if inst.kind not in _PRICE_KINDS:
        return 0
    if inst.base == asset and same_money(inst.quote, into):
        return 1
    if same_money(inst.quote, asset) and inst.base == into:
        return -1
    return 0


def unvalued(into: str, instruments: Mapping[str, Instrument]) -> list[str]:
    """The settlement assets of ``instruments`` that no instrument of theirs converts into
    ``into`` (:func:`conversion_rate`'s rule, before any mark): a firm whose currency is
    ``into`` could never value an agent's capital share in them, nor add their PnL to its
    own, so risk would refuse every order on their instruments."""
    settles = sorted({i.settle_asset for i in instruments.values()})
    return [
        asset
        for asset in settles
        if not same_money(asset, into)
        and not any(_prices(inst, asset, into) for inst in instruments.values())
    ]


def conversion_rate(
    asset: str, into: str, instruments: dict[str, Instrument], marks: dict[str, float]
) -> Decimal | None:
    """The price of one ``asset`` in ``into`` at the current mark (the one mark rule,
    ``sapphire.kernel.marks``), from an instrument of the run that prices one in the other
    (:func:`_prices`); None while no such instrument has a mark."""
    if same_money(asset, into):
        return Decimal(1)
    best: tuple[int, str, Decimal] | None = None
    for inst in instruments.values():
        rank = _PRICE_KINDS.get(inst.kind)
        mark = marks.get(inst.symbol)
        if rank is None or mark is None or mark <= 0:
            continue
        way = _prices(inst, asset, into)
        if not way:
            continue
        price = Decimal(repr(mark)) * inst.tick
        rate = price if way > 0 else 1 / price
        if best is None or (rank, inst.symbol) < best[:2]:
            best = (rank, inst.symbol, rate)
    return None if best is None else best[2]


def convert(
    by_asset: dict[str, Decimal],
    into: str,
    instruments: dict[str, Instrument],
    marks: dict[str, float],
) -> FirmPnl:
    """Per-asset amounts as one figure in ``into`` (see :class:`FirmPnl`)."""
    total = _ZERO
    rates: dict[str, Decimal] = {}
    missing = []
    for asset, amount in sorted(by_asset.items()):
        if asset == into:
            total += amount  # no rate: a single-asset run's figure stays exact
            continue
        rate = conversion_rate(asset, into, instruments, marks)
        if rate is None:
            if amount:
                missing.append(asset)
            continue
        rates[asset] = rate
        total += amount * rate
    return FirmPnl(asset=into, total=total, by_asset=by_asset, rates=rates, missing=tuple(missing))


class PositionState(msgspec.Struct, kw_only=True):
    qty_lots: int = 0
    # Total cost in price-unit lots (tick-lots for linear; -lots/ticks for inverse), as a
    # Fraction on a 1e-30 grid (``_COST_GRID``): partial closes keep the average entry as
    # exact as any figure shows it, at a bounded cost.
    cost_ticklots: Fraction = Fraction(0)
    realized_pnl_quote: Decimal = _ZERO
    fees_quote: Decimal = _ZERO
    traded_lots: int = 0
    # a perpetual's funding, received (+) or paid (-), as the venue's account books it
    funding_quote: Decimal = _ZERO

    @property
    def booked_quote(self) -> Decimal:
        """PnL booked so far, before the open position's mark: realized - fees + funding."""
        return self.realized_pnl_quote - self.fees_quote + self.funding_quote

    def avg_entry_ticks(self, inst: Instrument | None = None) -> Decimal:
        """Average entry price in ticks (inverse: the harmonic mean, in ``inst``'s units)."""
        if self.qty_lots == 0:
            return _ZERO
        units = self.cost_ticklots / self.qty_lots
        return _to_decimal(units if inst is None else inst.units_to_ticks(units))


class Portfolio:
    """Folds fills into positions; marks to a price for unrealized PnL."""

    # the config's ``currency`` ("" = the rule of :func:`reporting_asset`); a class default
    # too: a portfolio restored from a checkpoint written before the field has none
    currency = ""

    def __init__(self, instruments: dict[str, Instrument], currency: str = "") -> None:
        self._instruments = instruments
        self.currency = currency
        self.positions: dict[tuple[str, str], PositionState] = {}

    def apply_fill(self, fill: OrderFilled) -> PositionState:
        inst = self._instruments[fill.symbol]
        state = self.positions.setdefault((fill.agent_id, fill.symbol), PositionState())
        state.fees_quote += fill.fee_quote
        state.traded_lots += fill.qty_lots
        self._move(inst, state, int(fill.side) * fill.qty_lots, fill.price_ticks)
        if fill.fee_lots:
            # the lots the venue kept as its fee leave the position as a sale at the fill
            # price would (their value is the fee in fee_quote, so PnL is the account's)
            self._move(inst, state, -fill.fee_lots, fill.price_ticks)
        return state

    @staticmethod
    def _move(inst: Instrument, state: PositionState, signed: int, price_ticks: int) -> None:
        if state.qty_lots == 0 or (state.qty_lots > 0) == (signed > 0):
            state.qty_lots += signed
            state.cost_ticklots = _on_grid(
                state.cost_ticklots + signed * inst.price_units(price_ticks)
            )
            return
        # Reducing (and possibly flipping): realize PnL on the closed part at the average entry.
        closing = min(abs(signed), abs(state.qty_lots))
        direction = 1 if state.qty_lots > 0 else -1
        exit_units = inst.price_units(price_ticks)
        remaining_old = state.qty_lots - direction * closing
        if remaining_old == 0:
            pnl_ticklots = exit_units * state.qty_lots - state.cost_ticklots
            flipped = signed + direction * closing
            state.qty_lots = flipped
            state.cost_ticklots = _on_grid(flipped * exit_units)
        else:
            # the cost the closed lots release is what the kept lots' cost (on the grid)
            # leaves: the grid's rounding is realized with them, never lost from the PnL
            kept = _on_grid(state.cost_ticklots * remaining_old / state.qty_lots)
            pnl_ticklots = exit_units * (state.qty_lots - remaining_old) - (
                state.cost_ticklots - kept
            )
            state.cost_ticklots = kept
            state.qty_lots = remaining_old
        state.realized_pnl_quote += inst.money(_to_decimal(pnl_ticklots))

    def apply_funding(self, symbol: str, rate: Decimal, mark_ticks: float | None) -> int:
        """A perpetual's funding settles on every open position of ``symbol``: longs pay
        shorts when ``rate`` > 0, ``position notional at the mark x rate`` (the rule of the
        venue's account, :meth:`sapphire.exchange.account.Account.apply_funding`, per agent:
        the agents' payments add up to the account's at the same mark; the venue marks at
        its book's mid, the firm at the one mark rule's (sapphire.kernel.marks), and a fill
        the firm has not heard of yet at the settlement is the venue's alone). Returns the
        positions it settled; none without a mark (the venue skips it then too)."""
        inst = self._instruments.get(symbol)
        if inst is None or not inst.derivative or mark_ticks is None:
            return 0
        mark = Decimal(repr(mark_ticks))
        settled = 0
        for (_, sym), state in self.positions.items():
            if sym == symbol and state.qty_lots:
                state.funding_quote += inst.funding_quote(rate, mark, state.qty_lots)
                settled += 1
        return settled

    def unrealized_quote(self, agent_id: str, symbol: str, mark_ticks: float | None) -> Decimal:
        """Mark-to-market PnL of the open position; zero while there is no mark yet."""
        state = self.positions.get((agent_id, symbol))
        if state is None or state.qty_lots == 0 or mark_ticks is None:
            return _ZERO
        inst = self._instruments[symbol]
        mark = inst.price_units_dec(Decimal(repr(mark_ticks)))
        return inst.money(mark * state.qty_lots - _to_decimal(state.cost_ticklots))

    def position_lots(self, agent_id: str, symbol: str) -> int:
        state = self.positions.get((agent_id, symbol))
        return 0 if state is None else state.qty_lots

    def symbol_position_lots(self, symbol: str) -> int:
        return sum(s.qty_lots for (_, sym), s in self.positions.items() if sym == symbol)

    def total_pnl_quote(self, agent_id: str | None, marks: dict[str, float]) -> Decimal:
        """Realized - fees + unrealized, for one agent or (None) the firm."""
        total = _ZERO
        for (agent, symbol), state in self.positions.items():
            if agent_id is not None and agent != agent_id:
                continue
            total += state.booked_quote
            if symbol in marks:
                total += self.unrealized_quote(agent, symbol, marks[symbol])
        return total

    def pnl_by_asset(self, agent_id: str | None, marks: dict[str, float]) -> dict[str, Decimal]:
        """:meth:`total_pnl_quote` per settlement asset: coin and quote are never added."""
        totals: dict[str, Decimal] = {}
        for (agent, symbol), state in self.positions.items():
            if agent_id is not None and agent != agent_id:
                continue
            asset = self._instruments[symbol].settle_asset
            # summed as total_pnl_quote sums, so a one-asset firm's figure is the same Decimal
            total = totals.get(asset, _ZERO)
            total += state.booked_quote
            if symbol in marks:
                total += self.unrealized_quote(agent, symbol, marks[symbol])
            totals[asset] = total
        return totals

    # (currency, the asset it resolves to): the rule reads every instrument, and risk asks
    # for the firm's currency an order; keyed by the currency, so a portfolio restored
    # without the field still resolves by the rule
    _reporting: tuple[str, str] | None = None

    @property
    def reporting_asset(self) -> str:
        known = self._reporting
        if known is None or known[0] != self.currency:
            known = self._reporting = (
                self.currency,
                reporting_asset(self._instruments, self.currency),
            )
        return known[1]

    def firm_pnl(self, marks: dict[str, float]) -> FirmPnl:
        """The firm's PnL per settlement asset and converted into its reporting currency."""
        return self.convert(self.pnl_by_asset(None, marks), marks)

    def convert(self, by_asset: dict[str, Decimal], marks: dict[str, float]) -> FirmPnl:
        return convert(by_asset, self.reporting_asset, self._instruments, marks)

    def to_message(self, agent_id: str, symbol: str, now_ns: int) -> Position:
        state = self.positions.get((agent_id, symbol), PositionState())
        return Position(
            ts_event_ns=now_ns,
            agent_id=agent_id,
            symbol=symbol,
            qty_lots=state.qty_lots,
            avg_entry_ticks=state.avg_entry_ticks(self._instruments.get(symbol)),
            realized_pnl_quote=state.realized_pnl_quote,
            fees_quote=state.fees_quote,
        )


def _to_decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)

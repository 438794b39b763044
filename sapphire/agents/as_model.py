"""Avellaneda-Stoikov market-making maths as pure functions (all prices in ticks).

Units, fixed once: prices and depths in **ticks**, time in **seconds**. So ``sigma`` is ticks
per sqrt(second), ``gamma`` (hummingbot's ``risk_factor``) is 1/tick per unit of inventory,
``kappa`` is 1/tick and the intensity scale ``A`` is fills per second. Inventory ``q`` is in
units of the quote size (``order_amount``), as in the papers.

* Finite horizon, Avellaneda & Stoikov (2008), eq. (29)-(30):
  ``r = s - q * gamma * sigma^2 * (T - t)``,
  ``spread = gamma * sigma^2 * (T - t) + (2 / gamma) * ln(1 + gamma / kappa)``.
* Infinite horizon: the Guéant-Lehalle-Fernandez-Tapia (GLFT, 2013) asymptotic closed form
  with ``xi = gamma`` and unit order size (Guéant 2017, "Optimal market making", eq. 4.6-4.7),
  the form hftbacktest uses:
  ``delta_bid = c1 + (2q + 1)/2 * sigma * c2``, ``delta_ask = c1 - (2q - 1)/2 * sigma * c2``
  with ``c1 = ln(1 + gamma/kappa) / gamma`` and
  ``c2 = sqrt(gamma / (2 A kappa) * (1 + gamma/kappa) ** (1 + kappa/gamma))``.
* Fill intensity of a quote at depth ``delta``: ``lambda(delta) = A * exp(-kappa * delta)``,
  fitted from recorded trades by least squares on ``ln lambda``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def reservation_price(mid: float, q: float, gamma: float, sigma: float, t_left: float) -> float:
    """Indifference price of an agent holding ``q`` units with ``t_left`` seconds to go."""
    return mid - q * gamma * sigma * sigma * t_left


def optimal_spread(gamma: float, sigma: float, kappa: float, t_left: float) -> float:
    """Total bid-ask spread (ticks) around the reservation price, finite horizon."""
    return gamma * sigma * sigma * t_left + (2.0 / gamma) * math.log1p(gamma / kappa)


def glft_coefficients(gamma: float, kappa: float, intensity_a: float) -> tuple[float, float]:
    """``(c1, c2)`` of the GLFT infinite-horizon quotes (see module docstring)."""
    ratio = gamma / kappa
    c1 = math.log1p(ratio) / gamma
    c2 = math.sqrt(gamma / (2.0 * intensity_a * kappa) * (1.0 + ratio) ** (1.0 + kappa / gamma))
    return c1, c2


def glft_depths(
    q: float, gamma: float, sigma: float, kappa: float, intensity_a: float
) -> tuple[float, float]:
    """``(bid_depth, ask_depth)`` in ticks below/above mid for inventory ``q``."""
    c1, c2 = glft_coefficients(gamma, kappa, intensity_a)
    bid = c1 + (2.0 * q + 1.0) / 2.0 * sigma * c2
    ask = c1 - (2.0 * q - 1.0) / 2.0 * sigma * c2
    return bid, ask


def ewma_variance(
    var: float, price_change: float, dt_s: float, halflife_s: float, initialized: bool
) -> float:
    """Time-decayed EWMA of the variance rate (ticks^2 per second) of mid changes.

    Each observation ``dp^2 / dt`` is weighted by ``1 - exp(-dt / tau)`` with
    ``tau = halflife / ln 2``, so irregular event spacing is handled without resampling.
    """
    sample = price_change * price_change / dt_s
    if not initialized:
        return sample
    alpha = -math.expm1(-dt_s * math.log(2.0) / halflife_s)
    return var + alpha * (sample - var)


def estimate_intensity(
    depths_ticks: Sequence[float], duration_s: float, max_depth_ticks: float, buckets: int = 10
) -> tuple[float, float] | None:
    """Fit ``lambda(delta) = A exp(-kappa delta)`` to trade depths; ``(A, kappa)`` or None.

    A quote resting ``delta`` ticks from mid would have been hit by every trade that printed
    at least that far away, so ``lambda(delta)`` is the rate of trades with depth >= delta.
    Grid points with no trades are left out (their log is undefined); None when fewer than
    two points remain or the fitted decay is not positive.
    """
    if duration_s <= 0 or buckets < 2 or max_depth_ticks <= 0:
        return None
    step = max_depth_ticks / (buckets - 1)
    xs: list[float] = []
    ys: list[float] = []
    for k in range(buckets):
        delta = k * step
        count = sum(1 for d in depths_ticks if d >= delta - 1e-12)
        if count > 0:
            xs.append(delta)
            ys.append(math.log(count / duration_s))
    if len(xs) < 2:
        return None
    mx = sum(xs) / len(xs)
    my = sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    if slope >= 0:
        return None
    return math.exp(my - slope * mx), -slope

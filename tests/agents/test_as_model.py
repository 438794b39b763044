"""A-S / GLFT maths against values worked by hand, plus invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.agents import as_model


def test_reservation_price_with_long_inventory_is_below_mid() -> None:
    # r = s - q*gamma*sigma^2*(T-t) = 100 - 2 * 0.1 * 2^2 * 0.5 = 100 - 0.4
    assert as_model.reservation_price(100.0, 2.0, 0.1, 2.0, 0.5) == pytest.approx(99.6, abs=1e-12)


def test_optimal_spread_with_given_parameters_matches_hand_value() -> None:
    # gamma*sigma^2*(T-t) + 2/gamma*ln(1+gamma/kappa)
    # = 0.1*4*0.5 + 20*ln(1 + 0.1/1.5) = 0.2 + 20*ln(16/15) = 0.2 + 20*0.0645385211 = 1.49077042
    assert as_model.optimal_spread(0.1, 2.0, 1.5, 0.5) == pytest.approx(1.4907704227, abs=1e-9)


def test_glft_depths_with_inventory_one_match_hand_values() -> None:
    # c1 = ln(1 + 0.1/1.5)/0.1 = 0.645385211
    # c2 = sqrt(0.1/(2*2*1.5) * (16/15)^(1+15)) = sqrt(0.0166667 * 2.80840397) = 0.216348637
    # bid = c1 + (2*1+1)/2 * sigma*c2 = 0.645385 + 1.5*2*0.216349 = 1.294431
    # ask = c1 - (2*1-1)/2 * sigma*c2 = 0.645385 - 0.5*2*0.216349 = 0.429037
    c1, c2 = as_model.glft_coefficients(0.1, 1.5, 2.0)
    assert c1 == pytest.approx(0.645385211, abs=1e-9)
    assert c2 == pytest.approx(0.216348637, abs=1e-9)
    bid, ask = as_model.glft_depths(1.0, 0.1, 2.0, 1.5, 2.0)
    assert bid == pytest.approx(1.294431123, abs=1e-9)
    assert ask == pytest.approx(0.429036574, abs=1e-9)


def test_estimate_intensity_with_halving_counts_recovers_a_and_kappa() -> None:
    # Trades at depth >= 0, 1, 2: 100, 50, 25 over 10 s -> lambda = 10, 5, 2.5 per second,
    # so ln(lambda) falls by ln 2 per tick: kappa = ln 2, A = 10.
    depths = [0.0] * 50 + [1.0] * 25 + [2.0] * 25
    fit = as_model.estimate_intensity(depths, 10.0, max_depth_ticks=2.0, buckets=3)
    assert fit is not None
    a, kappa = fit
    assert a == pytest.approx(10.0, rel=1e-12)
    assert kappa == pytest.approx(math.log(2.0), rel=1e-12)


def test_estimate_intensity_with_no_spread_of_depths_returns_none() -> None:
    assert as_model.estimate_intensity([0.0] * 10, 1.0, max_depth_ticks=5.0) is None
    assert as_model.estimate_intensity([1.0], 0.0, max_depth_ticks=5.0) is None


def test_ewma_variance_with_halflife_equal_to_dt_averages_equally() -> None:
    # first sample: 2^2 / 1 s = 4; second: 4^2 / 1 s = 16, weight 1 - exp(-ln 2) = 0.5 -> 10
    v1 = as_model.ewma_variance(0.0, 2.0, 1.0, 1.0, initialized=False)
    assert v1 == 4.0
    assert as_model.ewma_variance(v1, 4.0, 1.0, 1.0, initialized=True) == pytest.approx(10.0)


pos = st.floats(min_value=1e-3, max_value=10.0, allow_nan=False)


@given(q=st.floats(-20, 20), gamma=pos, sigma=pos, kappa=pos, a=pos)
def test_glft_depths_are_skewed_by_inventory_and_keep_their_width(
    q: float, gamma: float, sigma: float, kappa: float, a: float
) -> None:
    bid, ask = as_model.glft_depths(q, gamma, sigma, kappa, a)
    c1, c2 = as_model.glft_coefficients(gamma, kappa, a)
    # total width does not depend on q; the skew is q * sigma * c2 on each side
    assert bid + ask == pytest.approx(2 * c1 + sigma * c2, rel=1e-9, abs=1e-9)
    assert bid - ask == pytest.approx(2 * q * sigma * c2, rel=1e-9, abs=1e-9)


@given(gamma=pos, sigma=pos, kappa=pos, t=st.floats(0, 100), q=st.floats(-10, 10))
def test_reservation_price_decreases_with_inventory_and_spread_is_positive(
    gamma: float, sigma: float, kappa: float, t: float, q: float
) -> None:
    assert as_model.optimal_spread(gamma, sigma, kappa, t) > 0
    r_q = as_model.reservation_price(1000.0, q, gamma, sigma, t)
    r_more = as_model.reservation_price(1000.0, q + 1, gamma, sigma, t)
    assert r_more <= r_q

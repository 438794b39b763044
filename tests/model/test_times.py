"""The one people's time format, exact to the nanosecond."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.model.times import utc_text


def test_digits_and_the_epoch() -> None:
    assert utc_text(0) == "1970-01-01 00:00:00 UTC"
    ns = 1_723_075_200_123_456_789  # 2024-08-08, a recorded day
    assert utc_text(ns) == "2024-08-08 00:00:00 UTC"
    assert utc_text(ns, 3) == "2024-08-08 00:00:00.123 UTC"
    assert utc_text(ns, 9) == "2024-08-08 00:00:00.123456789 UTC"
    assert utc_text(-1, 9) == "1969-12-31 23:59:59.999999999 UTC"
    with pytest.raises(ValueError, match="digits"):
        utc_text(ns, 10)


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # to 2100
def test_microseconds_are_exact_where_a_float_is_not(ns: int) -> None:
    seconds, rest = divmod(ns, 10**9)
    expected = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
    assert utc_text(ns, 6) == expected.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"

"""The end-of-run screen says why the venue expired orders: a quotes-and-trades run showed
"orders expired 1087" and nothing else (the reports' counts it read were refusals only, so
the "market order with no opposite book" line could never show)."""

from __future__ import annotations

from tests.cli.test_summary import _screen, _summary


def _lines(screen: str, start: str) -> list[str]:
    return [line for line in screen.splitlines() if line.lstrip("│ ").startswith(start)]


def test_each_expiry_reason_is_a_line_with_its_count_and_why() -> None:
    books = {"sequence_gaps": 0, "expired: no_liquidity": 1087, "expired: remainder": 6}
    screen = _screen(_summary(orders_by_status={"expired": 1093}, venue_books=books))
    (no_book,) = _lines(screen, "venue expired: no_liquidity")
    assert "market or IOC order with no opposite book" in no_book
    assert no_book.rstrip(" │").endswith(" 1087")
    (rest,) = _lines(screen, "venue expired: remainder")
    assert "unfilled rest of a market or IOC order" in rest
    assert rest.rstrip(" │").endswith(" 6")


def test_no_expiry_no_line() -> None:
    screen = _screen(_summary(venue_books={"sequence_gaps": 0, "expired: fok_not_fillable": 0}))
    assert "venue expired" not in screen
    assert "venue expired" not in _screen(_summary())

"""The view engine's own arithmetic and sharing, in-process (the oracle tests run it end to end)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from freshet.common.sql.types import encoder, numeric_div
from freshet.transform.views.engine import _same_fn, exact_decimals, numeric_avg, numeric_json

exact_decimals()

numerics = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=-20, max_value=0),
)


@given(numerics, st.integers(min_value=1, max_value=10**12))
def test_numeric_avg_is_numeric_division_by_the_count(total: Decimal, n: int) -> None:
    expected = numeric_div(total, Decimal(n))
    got = numeric_avg(total, n)
    assert str(got) == str(expected)


def test_numeric_avg_of_edge_values() -> None:
    cases = [
        (Decimal("0"), 1),
        (Decimal("0.00"), 3),
        (Decimal("-0.01"), 3),
        (Decimal("-0.005"), 1),
        (Decimal("9999.99"), 9999),
        (Decimal("10000"), 10000),
        (Decimal("1"), 3),
        (Decimal("-2"), 3),
        (Decimal("5E-1000"), 2),
        (Decimal("5E-1001"), 2),
        (Decimal("1E+5"), 7),
        (Decimal("NaN"), 2),
        (Decimal("Infinity"), 2),
        (Decimal("-Infinity"), 2),
    ]
    for total, n in cases:
        assert str(numeric_avg(total, n)) == str(numeric_div(total, Decimal(n))), (total, n)


def test_only_the_same_expression_shares_an_aggregate_state() -> None:
    def column(a: int, p: int):  # type: ignore[no-untyped-def]
        def get(t):  # type: ignore[no-untyped-def]
            row = t[a]
            return None if row is None else row[p]

        return get

    def plus(f, g):  # type: ignore[no-untyped-def]
        return lambda t: f(t) + g(t)

    assert _same_fn(column(0, 3), column(0, 3))
    assert not _same_fn(column(0, 3), column(0, 2))
    assert not _same_fn(column(1, 3), column(0, 3))
    assert _same_fn(plus(column(0, 1), column(1, 2)), plus(column(0, 1), column(1, 2)))
    assert not _same_fn(plus(column(0, 1), column(1, 2)), plus(column(0, 1), column(1, 1)))
    assert not _same_fn(lambda t: t[0], lambda t: t[0])  # two lambdas: two code objects


@given(numerics)
def test_a_numeric_in_a_view_row_is_written_as_its_encoder_writes_it(value: Decimal) -> None:
    assert numeric_json(value) == encoder("numeric")(value)


def test_numeric_zeros_and_specials_are_written_as_their_encoder_writes_them() -> None:
    for text in ["0", "-0", "-0.00", "0E-7", "NaN", "Infinity", "-Infinity", "1E-7", "-1.50"]:
        value = Decimal(text)
        assert numeric_json(value) == encoder("numeric")(value), text

"""What the expression compiler refuses, where it says the problem is, and run-time errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from freshet.common.sql import types
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import (
    Compiled,
    EvalError,
    column_names,
    compile_expr,
    location,
    parse_expression,
)

COLUMN_TYPES = {"amount": "numeric", "qty": "int4", "status": "text", "at": "timestamptz"}


class Scope:
    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        name = fields[-1]
        if name not in COLUMN_TYPES:
            raise SqlError(f'column "{name}" does not exist', location)
        return Compiled(lambda row: row[name], COLUMN_TYPES[name])

    def special(self, node: Any) -> Compiled | None:
        return None


def compile_text(text: str, deterministic: bool = True) -> Compiled:
    node, offset = parse_expression(text)
    return compile_expr(node, Scope(), offset, deterministic=deterministic)


def test_a_pipeline_filter_compiles_and_runs():
    compiled = compile_text("amount > 100 AND status IN ('paid','sent')")
    assert compiled.type == "bool"
    assert compiled.fn({"amount": Decimal("150.5"), "status": "paid"}) is True
    assert compiled.fn({"amount": Decimal("50"), "status": "paid"}) is False
    assert compiled.fn({"amount": None, "status": "paid"}) is None
    assert compiled.fn({"amount": None, "status": "new"}) is False


# (text, part of the message, position in the text)
REFUSALS = [
    ("amount +", "syntax error", 8),
    ("amount > 1; DROP TABLE t", "not several statements", 12),
    ("amount FROM t", "cannot have clauses", None),
    ("amount AS a", "cannot have an alias", 0),
    ("amount, qty", "not a list", 8),
    ("status > 1", "operator does not exist: text > integer", 7),
    ("'abc' + 1", 'invalid input syntax for type integer: "abc"', 6),
    ("'1' + '2'", "operator is not unique: unknown + unknown", 4),
    ("qty + nope", 'column "nope" does not exist', 6),
    ("now() > at", "now() is not deterministic; views cannot use it", 0),
    ("at < current_timestamp", "current_timestamp() is not deterministic", 5),
    ("random() > 0.5", "random() is not deterministic", 0),
    ("count(qty) > 1", "aggregate function count() is not allowed here", 0),
    ("1 + sum(amount)", "aggregate function sum() is not allowed here", 4),
    ("count(*)", "aggregate function count() is not allowed here", 0),
    ("row_number() OVER ()", "window functions are not supported", 0),
    ("qty IN (SELECT 1)", "subqueries are not supported", 4),
    ("EXISTS (SELECT 1)", "subqueries are not supported", 0),
    ("lower(qty)", "function lower(integer) does not exist", 0),
    ("frobnicate(qty)", "function frobnicate(integer) does not exist", 0),
    ("qty AND true", "argument of AND must be type boolean, not type integer", 0),
    ("NOT status", "argument of NOT must be type boolean, not type text", 4),
    ("CASE WHEN qty > 1 THEN 'a' ELSE 1 END", 'invalid input syntax for type integer: "a"', 0),
    ("CASE WHEN qty > 1 THEN status ELSE qty END", "CASE types text and integer cannot be matched", 35),
    ("COALESCE(qty, status)", "COALESCE types integer and text cannot be matched", 14),
    ("qty::char(3)", "character(n) is not supported", 5),
    ("qty::money", 'type "money" is not supported', 5),
    ("'x'::date", 'invalid input syntax for type date: "x"', 3),
    ("qty = 70000::int2", "smallint out of range", 11),
    ("qty > 1 / 0", "division by zero", 8),
    ("CASE WHEN qty > 0 THEN 1 / 0 END", "division by zero", 25),
    ("interval '1 month'", "months or years", None),
    ("sqrt(amount)", "function sqrt(numeric) (as numeric) is not supported", 0),
    ("status ~ 'a'", "operator ~ is not supported", 7),
    ("status SIMILAR TO 'a'", "SIMILAR TO is not supported", 7),
    ("qty = ANY('{1,2}')", "ANY/ALL with an array is not supported", 4),
    ("extract(hour from DATE '2020-01-01')", 'unit "hour" not supported for type date', 0),
    ("date_trunc('fortnight', at)", 'unit "fortnight" not recognized', 0),
    ("greatest('{}'::json, '[]'::json)", "could not identify an ordering operator for type json", 0),
    ("amount * interval '1 day'", "operator numeric * interval (as double precision, interval)", 7),
    ("ARRAY[1, 2]", "ARRAY constructors are not supported", 0),
    ("status COLLATE \"C\" = 'a'", "COLLATE are not supported", 7),
    ("*", "* is not allowed in an expression", 0),
    ("public.lower(status)", "function public.lower() does not exist", 0),
    ("lower(DISTINCT status)", "not an aggregate function", 0),
    ("at AT TIME ZONE 'UTC'", "AT TIME ZONE is not supported", 3),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message", "position"), REFUSALS)
def test_refusal_names_the_problem_and_its_position(text, message, position):
    with pytest.raises(SqlError) as caught:
        compile_text(text)
    assert message in caught.value.message
    assert caught.value.position == position


def test_nondeterministic_functions_are_available_to_pipelines():
    compiled = compile_text("now() >= at", deterministic=False)
    assert compiled.type == "bool"
    assert compile_text("current_date", deterministic=False).type == "date"
    with pytest.raises(SqlError, match=r"function random\(\) is not supported"):
        compile_text("random()", deterministic=False)


EVAL_ERRORS = [
    ("qty / 0", {"qty": 1}, "division by zero"),
    ("qty % 0", {"qty": 1}, "division by zero"),
    ("amount / 0", {"amount": Decimal("1.5")}, "division by zero"),
    ("amount % 0", {"amount": Decimal("1.5")}, "division by zero"),
    ("qty * 2147483647", {"qty": 2}, "integer out of range"),
    ("-qty", {"qty": -2147483648}, "integer out of range"),
    ("qty::int2", {"qty": 40000}, "smallint out of range"),
    ("amount::int", {"amount": Decimal("NaN")}, "cannot convert NaN to integer"),
    ("status::int", {"status": "12a"}, 'invalid input syntax for type integer: "12a"'),
    ("status::int", {"status": "99999999999"}, "out of range for type integer"),
    ("status::numeric", {"status": "1.2.3"}, "invalid input syntax for type numeric"),
    ("status::date", {"status": "2023-02-30"}, "date/time field value out of range"),
    ("status::uuid", {"status": "nope"}, "invalid input syntax for type uuid"),
    ("status::jsonb", {"status": "{"}, "invalid input syntax for type json"),
    ("amount::numeric(4,2)", {"amount": Decimal("123.4")}, "numeric field overflow"),
    ("status LIKE 'a\\'", {"status": "ab"}, "LIKE pattern must not end with escape character"),
    ("status LIKE 'a' ESCAPE 'xy'", {"status": "a"}, "invalid escape string"),
    ("substr(status, 1, -1)", {"status": "a"}, "negative substring length not allowed"),
    ("split_part(status, ',', 0)", {"status": "a"}, "field position must not be zero"),
    ("repeat(status, 1000000000)", {"status": "ab"}, "requested length too large"),
]


@pytest.mark.parametrize(("text", "row", "message"), EVAL_ERRORS)
def test_runtime_errors_raise_eval_error(text, row, message):
    compiled = compile_text(text)
    with pytest.raises(EvalError) as caught:
        compiled.fn(row)
    assert message in str(caught.value)


def test_column_names_and_location_helpers():
    node, offset = parse_expression("  t.amount + 1")
    assert column_names(node.lexpr) == ("t", "amount")
    assert location(node.lexpr) == offset + 2
    star, _ = parse_expression("t.*")
    assert column_names(star) == ("t", "*")


def test_special_replaces_nodes_before_normal_compilation():
    class Slots(Scope):
        def special(self, node: Any) -> Compiled | None:
            names = column_names(node.funcname) if hasattr(node, "funcname") else ()
            if names == ("sum",):
                return Compiled(lambda row: row["sum_slot"], "numeric")
            return None

    node, offset = parse_expression("sum(amount) / 3")
    compiled = compile_expr(node, Slots(), offset)
    assert compiled.type == "numeric"
    assert compiled.fn({"sum_slot": Decimal("10")}) == Decimal("3.3333333333333333")


def test_types_of_literals_follow_postgresql():
    assert compile_text("2147483647").type == types.INT4
    assert compile_text("2147483648").type == types.INT8
    assert compile_text("9223372036854775808").type == types.NUMERIC
    assert compile_text("1.0").type == types.NUMERIC
    assert compile_text("'x'").type == types.UNKNOWN
    assert compile_text("NULL").type == types.UNKNOWN

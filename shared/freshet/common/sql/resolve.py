"""PostgreSQL's type resolution: which overload an operator or function call means.

The rules of the PostgreSQL manual's "Type Conversion" chapter (func_select_candidate in
parse_func.c), over the types Freshet supports: exact matches first, then implicit casts,
preferring exact matches, then the preferred type of each category (float8 for numbers, text
for strings, timestamptz for date/times), then resolving untyped literals (text first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from freshet.common.sql import casts
from freshet.common.sql import types as t
from freshet.common.sql.functions import ANYNONARRAY, Overload

CATEGORY = {
    t.BOOL: "B",
    t.INT2: "N",
    t.INT4: "N",
    t.INT8: "N",
    t.NUMERIC: "N",
    t.FLOAT4: "N",
    t.FLOAT8: "N",
    t.TEXT: "S",
    t.DATE: "D",
    t.TIME: "D",
    t.TIMETZ: "D",
    t.TIMESTAMP: "D",
    t.TIMESTAMPTZ: "D",
    t.INTERVAL: "T",
    t.UUID: "U",
    t.JSON: "U",
    t.JSONB: "U",
    t.BYTEA: "U",
    t.UNKNOWN: "X",
    ANYNONARRAY: "P",
}
PREFERRED = frozenset({t.BOOL, t.FLOAT8, t.TEXT, t.TIMESTAMPTZ, t.INTERVAL})


def category(type: str) -> str:
    return "A" if t.is_array(type) else CATEGORY[type]


def can_coerce(source: str, target: str) -> bool:
    if source == target or source == t.UNKNOWN:
        return True
    if target == ANYNONARRAY:
        return not t.is_array(source)
    return target in casts.IMPLICIT_CASTS.get(source, ())


def select(candidates: Sequence[Overload], args: Sequence[str], binary_op: bool) -> list[Overload]:
    """PostgreSQL's overload resolution (func_select_candidate): the best candidates."""
    if binary_op and args.count(t.UNKNOWN) == 1:
        known = args[0] if args[1] == t.UNKNOWN else args[1]
        exact = [c for c in candidates if c.args == (known, known)]
        if exact:
            return exact
    exact = [c for c in candidates if c.args == tuple(args)]
    if exact:
        return exact
    viable = [c for c in candidates if all(map(can_coerce, args, c.args))]
    if len(viable) <= 1:
        return viable

    def best(score: Callable[[Overload], int]) -> None:
        nonlocal viable
        top = max(map(score, viable))
        kept = [c for c in viable if score(c) == top]
        viable = kept or viable

    best(lambda c: sum(a == p for a, p in zip(args, c.args, strict=True) if a != t.UNKNOWN))
    if len(viable) == 1:
        return viable
    best(
        lambda c: sum(
            a == p or (p in PREFERRED and category(p) == category(a))
            for a, p in zip(args, c.args, strict=True)
            if a != t.UNKNOWN
        )
    )
    if len(viable) == 1:
        return viable
    for i, arg in enumerate(args):
        if arg != t.UNKNOWN:
            continue
        categories = {category(c.args[i]) for c in viable}
        if "S" in categories:
            chosen = "S"
        elif len(categories) == 1:
            (chosen,) = categories
        else:
            return viable
        viable = [c for c in viable if category(c.args[i]) == chosen]
        preferred = [c for c in viable if c.args[i] in PREFERRED]
        viable = preferred or viable
    if len(viable) > 1:
        known_types = {a for a in args if a != t.UNKNOWN}
        if len(known_types) == 1:
            (only,) = known_types
            same = [
                c
                for c in viable
                if all(
                    can_coerce(only, p) for a, p in zip(args, c.args, strict=True) if a == t.UNKNOWN
                )
            ]
            if len(same) == 1:
                return same
    return viable

r"""Reading a product's rows from Redis: one row by key, or pages of rows with filters and sort.

Rows are read from the generation of the view that is ``ready`` (see
:mod:`freshet.serve.materialize.stores.redis` for the layout), through the caller's
:class:`~freshet.serve.access.Grant`: its row filter hides rows, its masks hide values.

A page walks one sorted set in order (the *driving* set): the view's keys (key order, the
default), the index of the sort field (its order, ties in key order), or without a sort the index
of a field an equality filter names. Only the fields the view lists in its ``indexes`` have an
index (:class:`~freshet.common.schemas.ViewSpec`): sorting needs one, filtering does not (rows
are then examined in key order). Conditions on the driving field become lexicographic bounds;
every condition, and the row filter, is checked again on each row read, since a row may change
between the range read and the row read. A page holds at most ``limit`` rows; when conditions
reject many rows a page may stop early, after examining :data:`MAX_EXAMINED` entries, with fewer
rows and a cursor.

The cursor is the last entry examined, so paging is keyset pagination: while rows change, every
row that exists and keeps its sort value for the whole walk is returned exactly once, in order;
rows inserted behind the cursor are not seen, rows inserted ahead are. A cursor is bound to its
query (product, filters, sort) and to the view's generation: after the view was redefined it is
refused (410) and the client starts again.

Comparisons follow the stored encodings (:mod:`freshet.serve.materialize.keys`): numbers by
value, text by code point (PostgreSQL's ``C`` collation), NULL matches no comparison (only
``<field>.null=true``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from freshet.common.sql import casts
from freshet.common.sql import types as t
from freshet.common.sql.types import EvalError, is_ordered
from freshet.serve.access import Grant
from freshet.serve.exceptions import BadRequest, Gone, NotFound, Unavailable
from freshet.serve.materialize.keys import NULL, field_encoder, field_end, tuple_encoder
from freshet.serve.materialize.stores.redis import RedisKeys
from freshet.serve.materialize.values import decoder

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_EXAMINED = 5000
"""Entries a page examines at most before it returns what it found, with a cursor."""

OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "null")
RESERVED = ("sort", "limit", "cursor", "lsn", "source", "timeout_ms")
"""Query parameters that are not filters (a field of that name is filtered as ``<name>.eq``)."""

UNFILTERABLE = frozenset({"json", "jsonb"})


# --- the view as stored --------------------------------------------------------------------


@dataclass(frozen=True)
class StoredView:
    """One ready generation of a view in Redis: its keys and its layout."""

    name: str
    generation: int
    keys: RedisKeys
    types: dict[str, str]
    """Every stored field (output columns and key-only fields) -> type."""
    key: tuple[tuple[str, str], ...]
    indexed: frozenset[str]

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _type in self.key)


READY_ROW = """
-- KEYS: the view's gen hash, the rows hash of generation ARGV[1]; ARGV: generation, K
local ready = redis.call('HGET', KEYS[1], 'ready')
if ready ~= ARGV[1] then
  return {0, ready}
end
return {1, redis.call('HGET', KEYS[2], ARGV[2])}
"""

GENERATION_MOVES = 3
"""Times a point read follows the view to a newer ready generation before it answers 503."""


class ViewCatalog:
    """Finds the ready generation of a view and its layout (cached: a generation never changes)."""

    def __init__(self, redis: Redis, root: str) -> None:
        self._r = redis
        self._root = root
        self._layouts: dict[tuple[str, int], StoredView] = {}
        self._seen: dict[str, int] = {}
        """View -> the ready generation last read: where a point read looks first."""
        self._ready_row = redis.register_script(READY_ROW)

    async def ready(self, view: str) -> StoredView:
        """The generation readers should read.

        Raises:
            Unavailable: the view has not been materialized yet (or not caught up once).
        """
        keys = RedisKeys(self._root, view)
        raw = await self._r.hget(keys.gen, "ready")
        if raw is None:
            raise Unavailable(
                f"view {view!r} is not materialized yet: retry in a moment (a new view is "
                "served once it has caught up with its topic)"
            )
        generation = int(raw)
        self._seen[view] = generation
        return await self.generation(view, generation)

    async def row(self, view: str, key_text: str) -> tuple[StoredView, bytes | None]:
        """The ready generation of ``view`` and the row of key ``key_text`` in it (or None).

        One Redis round trip once the ready generation has been seen: a script checks that it
        is still ``ready`` and reads the row from it, or answers the newer one, which is then
        read the same way.

        Raises:
            Unavailable: the view is not materialized (or kept moving to new generations).
            BadRequest: not a key of the view.
        """
        for _ in range(GENERATION_MOVES):
            seen = self._seen.get(view)
            known = self._layouts.get((view, seen)) if seen is not None else None
            stored = known if known is not None else await self.ready(view)
            encoded = parse_key(stored, key_text)
            found, value = await self._ready_row(
                keys=[stored.keys.gen, stored.keys.rows], args=[stored.generation, encoded]
            )
            if found:
                return stored, value
            if value is None:
                self._seen.pop(view, None)
            else:
                self._seen[view] = int(value)
        raise Unavailable(f"view {view!r} is being rebuilt: retry in a moment")

    async def generation(self, view: str, generation: int) -> StoredView:
        found = self._layouts.get((view, generation))
        if found is not None:
            return found
        keys = RedisKeys(self._root, view, generation)
        raw = await self._r.hget(keys.meta, "layout")
        if raw is None:
            raise Unavailable(f"view {view!r} is being rebuilt: retry in a moment")
        layout = orjson.loads(raw)
        types = {c["name"]: c["type"] for c in layout["columns"]}
        key = tuple((k["name"], k["type"]) for k in layout["key"])
        for name, type_ in key:
            types.setdefault(name, type_)
        stored = StoredView(view, generation, keys, types, key, frozenset(layout["indexed"]))
        if len(self._layouts) > 10_000:
            self._layouts.clear()
        self._layouts[(view, generation)] = stored
        return stored


# --- parameters ----------------------------------------------------------------------------


def parse_value(field: str, type_: str, text: str) -> Any:
    """A parameter's text as a value of the field's type, as PostgreSQL reads it.

    Raises:
        BadRequest: the text is not a value of the type.
    """
    parse = casts.input_function(type_)
    if parse is None or type_ in UNFILTERABLE or t.is_array(type_):
        raise BadRequest(f"field {field!r} ({t.sql_name(type_)}) cannot be filtered on")
    try:
        return parse(text)
    except (EvalError, ValueError, ArithmeticError) as exc:
        raise BadRequest(f"{field}: {text!r} is not a {t.sql_name(type_)} ({exc})") from None


def parse_key(view: StoredView, text: str) -> bytes:
    """The encoded key of a ``rows/{key}`` path segment.

    A one-column key is its value as text; a composite key is a JSON array of its values in key
    order (each a JSON string or number, read as the column's type).

    Raises:
        BadRequest: the text is not a key of the view.
    """
    if len(view.key) == 1:
        name, type_ = view.key[0]
        values = [parse_value(name, type_, text)]
    else:
        try:
            parts = orjson.loads(text)
        except orjson.JSONDecodeError:
            parts = None
        names = ", ".join(view.key_names)
        if not isinstance(parts, list) or len(parts) != len(view.key):
            raise BadRequest(
                f"the key of view {view.name!r} has the columns ({names}): give them as a JSON "
                'array in that order, e.g. ["EU", 2024]'
            )
        values = []
        for (name, type_), part in zip(view.key, parts, strict=True):
            if part is None:
                values.append(None)
            elif isinstance(part, bool | dict | list):
                raise BadRequest(f"key column {name!r}: {part!r} is not a {t.sql_name(type_)}")
            else:
                values.append(parse_value(name, type_, str(part)))
    return tuple_encoder([type_ for _name, type_ in view.key])(values)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any
    encoded: bytes
    """The value's tagged encoding (for ``null``: empty)."""


@dataclass(frozen=True)
class Query:
    conditions: tuple[Condition, ...]
    sort: str | None
    descending: bool
    limit: int
    cursor: str | None

    def fingerprint(self, product: str) -> str:
        parts = [product, self.sort or "", "desc" if self.descending else "asc"]
        parts += [f"{c.field}.{c.op}={c.encoded.hex()}:{c.value!r}" for c in self.conditions]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _boolean(field: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "t", "1", "yes"):
        return True
    if lowered in ("false", "f", "0", "no"):
        return False
    raise BadRequest(f"{field}: {text!r} is not true or false")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"limit: {text!r} is not an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, not {value}")
    return value


def parse_query(params: Iterable[tuple[str, str]], grant: Grant) -> Query:
    """The filters, sort, limit and cursor of a rows request.

    ``<field>=<v>`` and ``<field>.<op>=<v>`` (``op`` one of :data:`OPS`) filter on a field the
    role sees unmasked; ``sort=<field>`` or ``sort=-<field>``; ``limit``; ``cursor``. Parameters
    of :data:`RESERVED` other than those are left to the caller.

    Raises:
        BadRequest: an unknown parameter or field, a masked field, a bad value.
    """
    conditions: list[Condition] = []
    sort: str | None = None
    descending = False
    limit = DEFAULT_LIMIT
    cursor: str | None = None
    for name, text in params:
        if name == "sort":
            descending = text.startswith("-")
            sort = text[1:] if descending else text.lstrip("+")
            _usable(grant, sort, "sorted on")
        elif name == "limit":
            limit = _limit(text)
        elif name == "cursor":
            cursor = text
        elif name in RESERVED:
            continue
        else:
            field, op = name, "eq"
            if field not in grant.types:
                base, _, suffix = name.rpartition(".")
                if base and suffix in OPS:
                    field, op = base, suffix
            _usable(grant, field, "filtered on", param=name)
            type_ = grant.types[field]
            if op == "null":
                conditions.append(Condition(field, op, _boolean(name, text), b""))
                continue
            value = parse_value(field, type_, text)
            conditions.append(Condition(field, op, value, field_encoder(type_)(value)))
    return Query(tuple(conditions), sort, descending, limit, cursor)


def _usable(grant: Grant, field: str, what: str, param: str | None = None) -> None:
    if field not in grant.types:
        shown = ", ".join(grant.fields)
        if param is not None and param != field:
            raise BadRequest(f"unknown parameter {param!r}: no field {field!r} (fields: {shown})")
        if param is not None:
            raise BadRequest(
                f"unknown parameter {param!r}: filter on a field ({shown}) as <field>=<value> "
                f"or <field>.<op>=<value> with op in {', '.join(OPS)}; other parameters: "
                f"{', '.join(RESERVED)}"
            )
        raise BadRequest(f"cannot sort on {field!r}: it is not a field (fields: {shown})")
    if field in grant.masked:
        raise BadRequest(f"field {field!r} is masked for this API key: it cannot be {what}")


# --- pages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    generation: int


Bound = tuple[bytes, bool] | None
"""A lexicographic bound: (bytes, inclusive), None for unbounded."""


def _tighter_low(a: Bound, b: Bound) -> Bound:
    if a is None or b is None:
        return a or b
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return (a[0], a[1] and b[1])


def _tighter_high(a: Bound, b: Bound) -> Bound:
    if a is None or b is None:
        return a or b
    if a[0] != b[0]:
        return a if a[0] < b[0] else b
    return (a[0], a[1] and b[1])


def _bounds(conditions: Iterable[Condition]) -> tuple[Bound, Bound]:
    """Bounds on entries that start with the driving field's encoding, from its conditions."""
    low: Bound = None
    high: Bound = None
    for c in conditions:
        e = c.encoded
        if c.op == "eq":
            low, high = _tighter_low(low, (e, True)), _tighter_high(high, (e + b"\xff", False))
        elif c.op == "gt":
            low, high = _tighter_low(low, (e + b"\xff", False)), _tighter_high(high, (NULL, False))
        elif c.op == "gte":
            low, high = _tighter_low(low, (e, True)), _tighter_high(high, (NULL, False))
        elif c.op == "lt":
            high = _tighter_high(high, (e, False))
        elif c.op == "lte":
            high = _tighter_high(high, (e + b"\xff", False))
        elif c.op == "null":
            if c.value:
                low = _tighter_low(low, (NULL, True))
            else:
                high = _tighter_high(high, (NULL, False))
    return low, high


def _lex(bound: Bound, unbounded: bytes) -> bytes:
    if bound is None:
        return unbounded
    return (b"[" if bound[1] else b"(") + bound[0]


class _Check:
    """Checks every condition on a row's JSON object."""

    def __init__(self, conditions: tuple[Condition, ...], types: dict[str, str]) -> None:
        self._checks: list[Callable[[dict[str, Any]], bool]] = []
        for c in conditions:
            type_ = types[c.field]
            self._checks.append(self._one(c, decoder(type_), field_encoder(type_)))

    @staticmethod
    def _one(
        c: Condition, decode: Callable[[Any], Any], encode: Callable[[Any], bytes]
    ) -> Callable[[dict[str, Any]], bool]:
        name, op, want = c.field, c.op, c.encoded
        if op == "null":
            return lambda row: (row.get(name) is None) == c.value
        compare: Callable[[bytes], bool] = {
            "eq": lambda e: e == want,
            "ne": lambda e: e != want,
            "gt": lambda e: e > want,
            "gte": lambda e: e >= want,
            "lt": lambda e: e < want,
            "lte": lambda e: e <= want,
        }[op]

        def check(row: dict[str, Any]) -> bool:
            raw = row.get(name)
            return raw is not None and compare(encode(decode(raw)))

        return check

    def __call__(self, row: dict[str, Any]) -> bool:
        return all(check(row) for check in self._checks)


def _encode_cursor(generation: int, fingerprint: str, member: bytes) -> str:
    payload = orjson.dumps(
        {"g": generation, "q": fingerprint, "m": base64.b64encode(member).decode()}
    )
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_cursor(text: str, generation: int, fingerprint: str) -> bytes:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        member = base64.b64decode(payload["m"], validate=True)
        gen, query = int(payload["g"]), str(payload["q"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest("cursor: not a cursor this API returned") from None
    if query != fingerprint:
        raise BadRequest("cursor: it belongs to another query (other filters or sort)")
    if gen != generation:
        raise Gone(
            "cursor: the view was redefined since this cursor was made; start again without it"
        )
    return member


async def read_page(redis: Redis, view: StoredView, grant: Grant, query: Query) -> Page:
    """One page of ``query`` over ``view`` as ``grant`` sees it (see the module docstring)."""
    first_key = view.key[0][0] if view.key else None
    conditions = query.conditions
    driving: str | None = None
    if query.sort is not None:
        if query.sort != first_key and query.sort not in view.indexed:
            sortable = [
                f
                for f in grant.fields
                if (f in view.indexed or f == first_key) and f not in grant.masked
            ]
            why = (
                "it has no order (json, jsonb, bytea, array)"
                if not is_ordered(view.types[query.sort])
                else f"view {view.name!r} has no index on it (add it to the view's indexes)"
            )
            raise BadRequest(
                f"cannot sort on {query.sort!r}: {why}; sortable: {', '.join(sortable)}"
            )
        driving = None if query.sort == first_key else query.sort
    else:
        # An equality on an indexed field reads only its rows; otherwise the view's keys are
        # walked in order (bounded by conditions on the first key column) and rows checked.
        eq = next((c for c in conditions if c.op == "eq" and c.field in view.indexed), None)
        if eq is not None:
            driving = eq.field
    if driving is None:
        zset = view.keys.keys
        low, high = _bounds(c for c in conditions if c.field == first_key)
        split: Callable[[bytes], bytes] = lambda member: member  # noqa: E731
    else:
        zset = view.keys.index(driving)
        low, high = _bounds(c for c in conditions if c.field == driving)
        end = field_end(view.types[driving])
        split = lambda member: member[end(member, 0) :]  # noqa: E731
    fingerprint = query.fingerprint(grant.product.name)
    if query.cursor is not None:
        after = _decode_cursor(query.cursor, view.generation, fingerprint)
        if query.descending:
            high = _tighter_high(high, (after, False))
        else:
            low = _tighter_low(low, (after, False))
    check = _Check(conditions, view.types)
    rows: list[dict[str, Any]] = []
    examined = 0
    batch = min(max(query.limit * 2, 50), 1000)
    while True:
        lo, hi = _lex(low, b"-"), _lex(high, b"+")
        if query.descending:
            found = await redis.zrevrangebylex(zset, hi, lo, start=0, num=batch)
        else:
            found = await redis.zrangebylex(zset, lo, hi, start=0, num=batch)
        members: list[bytes] = list(found)  # type: ignore[arg-type]
        if not members:
            return Page(rows, None, view.generation)
        keys = [split(m) for m in members]
        raws = await redis.hmget(view.keys.rows, keys)
        for member, raw in zip(members, raws, strict=True):
            examined += 1
            if raw is not None:
                row = orjson.loads(raw)
                if isinstance(row, dict) and check(row):
                    shown = grant.present(row)
                    if shown is not None:
                        rows.append(shown)
            if len(rows) >= query.limit or examined >= MAX_EXAMINED:
                return Page(
                    rows, _encode_cursor(view.generation, fingerprint, member), view.generation
                )
        last = members[-1]
        if query.descending:
            high = (last, False)
        else:
            low = (last, False)


async def read_row(redis: Redis, view: StoredView, grant: Grant, key_text: str) -> dict[str, Any]:
    """The row of ``view`` whose key ``key_text`` is, as ``grant`` sees it.

    Raises:
        BadRequest: not a key of the view.
        NotFound: no such row, or one the role may not see (the same answer, so that a role
            learns nothing of rows it may not read).
    """
    raw: Any = await redis.hget(view.keys.rows, parse_key(view, key_text))
    return shown_row(grant, raw, key_text)


def shown_row(grant: Grant, raw: bytes | None, key_text: str) -> dict[str, Any]:
    """The stored row ``raw`` of key ``key_text`` as ``grant`` sees it.

    Raises:
        NotFound: no row, or one the role may not see (the same answer, so that a role learns
            nothing of rows it may not read).
    """
    shown = grant.present_raw(raw) if raw is not None else None
    if shown is None:
        raise NotFound(f"product {grant.product.name!r} has no row with key {key_text!r}")
    return shown

"""GraphQL over the data products: a schema per distinct access, generated from the products.

What a key may read decides its schema: one query field per readable product, typed from the
product's fields as the key's role sees them. A product the key may not read is absent, so a
query naming it fails validation, and introspection shows only what the key may read. Schemas
are built from :class:`~freshet.serve.access.Grant` objects and cached per (catalog version,
products with their generations and roles): built once per distinct access, not per request.

Per product ``p`` (names are read as GraphQL names, never evaluated):

- ``PRow``: the product's fields; ``PPage { rows: [PRow!]!, nextCursor: String }``;
- ``p(filter: PFilter, sort: PSort, limit: Int, cursor: String, lsn: String, source: String,
  timeoutMs: Int): PPage``: a page of rows, as ``GET /v1/products/p/rows`` (null, with an
  error, when the read fails: other products in the same request still answer);
- ``pByKey(key: String!, lsn: String, source: String, timeoutMs: Int): PRow``: one row by key
  (the key's value as text, or a JSON array of a composite key's values, as in
  ``/v1/products/p/rows/{key}``); null when there is no such row or the role may not see it.

``P`` is the product name with its first letter and every letter after an ``_`` in upper case,
that ``_`` dropped (``orders_by_day`` -> ``OrdersByDay``, ``a__b`` -> ``A_B``): product names
are ``[a-z][a-z0-9_]*``, so the rule is one-to-one and the four suffixes keep types apart.

Field names are the product's field names. A field whose name is not a GraphQL name
(``[_A-Za-z][_0-9A-Za-z]*``, not starting with ``__``) is left out of GraphQL (REST serves it).

Types: ``int2``/``int4`` Int; ``int8`` the custom scalar ``BigInt``, a JSON number as REST gives
it (GraphQL's Int is 32-bit; a JavaScript client needs a big-integer-aware JSON parser past
2^53); ``numeric`` String (decimal text); ``float4``/``float8`` Float (NaN and infinities are not
GraphQL Floats: such a value is a field error; REST serves them as strings); ``bool`` Boolean;
``text``, ``uuid``, dates, times and intervals String (ISO 8601); ``json``/``jsonb`` JSON;
``bytea`` String (base64); arrays lists of their element's type. A field the role masks is a
String, and can be neither filtered nor sorted on.

``PFilter`` has, per unmasked field that has an order (not json, bytea or arrays), a
``FieldCondition { eq, ne, gt, gte, lt, lte: String, isNull: Boolean }``: values in PostgreSQL's
text form, conditions combined with AND. ``PSort`` has ``<field>_ASC`` and ``<field>_DESC``
(one sort field: a page walks one index). Every argument is translated into the parameters REST
takes and read by the same code (:func:`~freshet.serve.read.rows.parse_query`,
:func:`~freshet.serve.read.rows.read_page`, :func:`~freshet.serve.read.rows.read_row`,
:func:`~freshet.serve.read.wait.wait_applied`): the same filters, pagination and access rules,
and the same messages: a read error is a GraphQL error carrying REST's message, with
``extensions.status`` the status REST answers and ``extensions.code`` its name.

A document is refused before it runs past :data:`MAX_TOKENS` tokens, :data:`MAX_ALIASES` aliases
(each alias may read a page of up to 1000 rows) or a depth of :data:`MAX_DEPTH` (introspection
aside).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
import re
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, NewType

import strawberry
from graphql import GraphQLError
from redis.asyncio import Redis
from strawberry.annotation import StrawberryAnnotation
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver

from freshet.common.sql import types as t
from freshet.serve.access import Grant
from freshet.serve.catalog import Catalog
from freshet.serve.exceptions import REDIS_DOWN, ApiError, NotFound, StoreUnavailable, store_error
from freshet.serve.read.rows import ViewCatalog, parse_query, read_page, read_row
from freshet.serve.read.wait import parse_lsn, parse_timeout, wait_applied

log = logging.getLogger(__name__)

MAX_DEPTH = 6
"""Deepest selection (introspection aside): ``p { rows { field } }`` is 3 deep."""
MAX_TOKENS = 5_000
MAX_ALIASES = 20
"""Aliases let one request read a product many times (each read up to 1000 rows)."""
MAX_SCHEMAS = 128

OPS = ("eq", "ne", "gt", "gte", "lt", "lte")

_GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_PRODUCT_NAME = re.compile(r"[a-z][a-z0-9_]*")

BigInt = NewType("BigInt", int)


def _serialize_bigint(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise GraphQLError(f"BigInt cannot represent {value!r}")


def _parse_bigint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise GraphQLError(f"BigInt cannot represent {value!r}")
    try:
        parsed = int(value)
    except ValueError:
        raise GraphQLError(f"BigInt cannot represent {value!r}") from None
    if not -(2**63) <= parsed < 2**63:
        raise GraphQLError(f"BigInt cannot represent {value!r}: out of range")
    return parsed


_CONFIG = StrawberryConfig(
    auto_camel_case=False,
    default_resolver=lambda source, name: (
        source[name] if type(source) is dict else getattr(source, name)
    ),
    scalar_map={
        BigInt: strawberry.scalar(
            name="BigInt",
            description="A 64-bit integer (PostgreSQL bigint), as a JSON number.",
            serialize=_serialize_bigint,
            parse_value=_parse_bigint,
        )
    },
)

_SCALARS: dict[str, Any] = {
    "bool": bool,
    "int2": int,
    "int4": int,
    "int8": BigInt,
    "numeric": str,
    "float4": float,
    "float8": float,
    "text": str,
    "uuid": str,
    "date": str,
    "time": str,
    "timetz": str,
    "timestamp": str,
    "timestamptz": str,
    "interval": str,
    "bytea": str,
    "json": JSON,
    "jsonb": JSON,
}


def graphql_name(name: str) -> bool:
    """Whether ``name`` may be a GraphQL name of ours (not reserved for introspection)."""
    return _GRAPHQL_NAME.fullmatch(name) is not None and not name.startswith("__")


def type_prefix(product: str) -> str:
    """``orders_by_day`` -> ``OrdersByDay`` (see the module docstring)."""
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), product[0].upper() + product[1:])


def field_type(type_: str, masked: bool) -> Any:
    """The Python annotation strawberry maps to the field's GraphQL type (always nullable)."""
    if masked:
        return str | None
    if t.is_array(type_):
        return list[field_type(type_[:-2], False)] | None  # type: ignore[misc]
    return _SCALARS.get(type_, JSON) | None


def filterable(grant: Grant, name: str) -> bool:
    """Whether GraphQL offers conditions on ``name``: as REST, an unmasked field with an order.

    A field is also left out when another field is named ``<name>.<op>``: REST would read the
    parameter ``<name>.<op>`` as that field.
    """
    if name in grant.masked or not t.is_ordered(grant.types[name]):
        return False
    return not any(f"{name}.{op}" in grant.types for op in (*OPS, "null"))


def sortable(grant: Grant, name: str) -> bool:
    """Whether ``name`` is in the sort enum: as REST, an unmasked field with an index."""
    return name in grant.sortable


@strawberry.input(description="Conditions on one field, all of which must hold.")
class FieldCondition:
    eq: str | None = strawberry.field(default=None, description="Equal to (PostgreSQL text).")
    ne: str | None = strawberry.field(default=None, description="Not equal to (and not NULL).")
    gt: str | None = strawberry.field(default=None, description="Greater than.")
    gte: str | None = strawberry.field(default=None, description="Greater than or equal.")
    lt: str | None = strawberry.field(default=None, description="Less than.")
    lte: str | None = strawberry.field(default=None, description="Less than or equal.")
    is_null: bool | None = strawberry.field(
        default=None, name="isNull", description="Is (true) or is not (false) NULL."
    )


@dataclass(frozen=True)
class ReadContext:
    """What resolvers need of the request: its key's grants and the stores (``info.context``)."""

    grants: dict[str, Grant]
    catalog: Catalog
    views: ViewCatalog
    redis: Redis
    redis_root: str


def _api_error(exc: ApiError) -> GraphQLError:
    """REST's error as a GraphQL error: its message, and its status in ``extensions``."""
    extensions: dict[str, Any] = {
        "code": HTTPStatus(exc.status_code).name,
        "status": exc.status_code,
    }
    if isinstance(exc, StoreUnavailable):
        extensions["retryAfter"] = exc.retry_after_s  # REST's Retry-After header, in seconds
    return GraphQLError(str(exc), extensions=extensions)


async def _read(read: Callable[[], Any]) -> Any:
    """Run a read; its :class:`ApiError` becomes a GraphQL error, anything else is masked."""
    try:
        return await read()
    except ApiError as exc:
        raise _api_error(exc) from None
    except REDIS_DOWN as exc:
        raise _api_error(store_error(exc)) from None
    except GraphQLError:
        raise
    except Exception:
        log.exception("GraphQL read failed")
        raise GraphQLError(
            "internal error while reading the product; it was logged",
            extensions={"code": "INTERNAL_SERVER_ERROR", "status": 500},
        ) from None


async def _wait(
    context: ReadContext, view: str, lsn: str | None, source: str | None, timeout_ms: int | None
) -> None:
    if lsn is None:
        return
    await wait_applied(
        context.catalog,
        context.redis,
        context.redis_root,
        view,
        parse_lsn(lsn),
        source,
        parse_timeout(None if timeout_ms is None else str(timeout_ms)),
    )


def _param(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


_WAIT_PARAMS = (
    _param(
        "lsn",
        Annotated[
            str | None,
            strawberry.argument(
                description="Read-your-writes: wait until the product reflects this source "
                "position (X/Y in hexadecimal, as pg_current_wal_lsn() shows it)."
            ),
        ],
    ),
    _param(
        "source",
        Annotated[
            str | None,
            strawberry.argument(description="The source lsn is of (when the view reads several)."),
        ],
    ),
    _param(
        "timeoutMs",
        Annotated[
            int | None,
            strawberry.argument(description="How long to wait for lsn, in ms (default 5000)."),
        ],
    ),
)


def _resolver(
    func: Callable[..., Any], params: Sequence[inspect.Parameter], returns: Any
) -> StrawberryResolver[Any]:
    """A resolver whose GraphQL arguments are ``params`` (``func`` takes them as keywords)."""
    func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_param("info", strawberry.Info, inspect.Parameter.empty), *params],
        return_annotation=returns,
    )
    return StrawberryResolver(func)


def _field(
    python_name: str,
    name: str,
    annotation: Any = None,
    resolver: StrawberryResolver[Any] | None = None,
    description: str | None = None,
) -> StrawberryField:
    # A field without a resolver reads its value from the row (see _CONFIG); it has a default so
    # that no generated __init__ requires it. One with a resolver may not have one.
    return StrawberryField(
        python_name=python_name,
        graphql_name=name,
        type_annotation=StrawberryAnnotation(annotation) if annotation is not None else None,
        base_resolver=resolver,
        description=description,
        default=dataclasses.MISSING if resolver is not None else None,
    )


def create_type(
    name: str, fields: list[StrawberryField], is_input: bool = False, description: str = ""
) -> Any:
    """A strawberry type named ``name`` exactly (``strawberry.tools.create_type`` camel-cases).

    Each field is an attribute under its ``python_name`` (``f<i>``, ``rows``...), never a name
    taken from a product.
    """
    namespace: dict[str, Any] = {f.python_name: f for f in fields}
    namespace["__annotations__"] = {f.python_name: f.type for f in fields}
    cls = types.new_class(name, (), {}, lambda ns: ns.update(namespace))
    return strawberry.type(cls, name=name, is_input=is_input, description=description or None)


class _ProductTypes:
    """The types and the two query fields of one product, as one grant sees it."""

    def __init__(self, grant: Grant) -> None:
        product = grant.product
        self.name = product.name
        self.key = product.key
        prefix = type_prefix(product.name)
        columns = [c for c in product.columns if graphql_name(c.name)]
        left_out = [c.name for c in product.columns if not graphql_name(c.name)]
        if left_out:
            log.warning(
                "product %s: fields %s are not GraphQL names and are left out of GraphQL",
                product.name,
                ", ".join(repr(n) for n in left_out),
            )
        self.usable = bool(columns)
        if not columns:
            return
        # Python attribute names are f<i>: a field name may be a Python keyword.
        self.columns = tuple((f"f{i}", c.name) for i, c in enumerate(columns))
        self.row = create_type(
            f"{prefix}Row",
            [
                _field(
                    py,
                    c.name,
                    field_type(c.type, c.name in grant.masked),
                    description=(
                        f"masked {t.sql_name(c.type)}"
                        if c.name in grant.masked
                        else t.sql_name(c.type)
                    ),
                )
                for (py, _), c in zip(self.columns, columns, strict=True)
            ],
            description=f"A row of product {product.name}.",
        )
        self.page = create_type(
            f"{prefix}Page",
            [
                _field("rows", "rows", list[self.row]),  # type: ignore[name-defined]
                _field(
                    "next_cursor",
                    "nextCursor",
                    str | None,
                    description="The cursor of the next page; null after the last one.",
                ),
            ],
            description=f"A page of rows of product {product.name}.",
        )
        self.filters = tuple((py, name) for py, name in self.columns if filterable(grant, name))
        self.filter: Any = None
        if self.filters:
            self.filter = create_type(
                f"{prefix}Filter",
                [_field(py, name, FieldCondition | None) for py, name in self.filters],
                is_input=True,
                description=f"Conditions on fields of {product.name}, all of which must hold.",
            )
        sorts = [name for _py, name in self.columns if sortable(grant, name)]
        self.sort: Any = None
        if sorts:
            members = [
                (f"{n}_{d}", ("-" if d == "DESC" else "") + n)
                for n in sorts
                for d in ("ASC", "DESC")
            ]
            sort_enum: Any = enum.Enum(f"{prefix}Sort", members)  # type: ignore[misc]
            self.sort = strawberry.enum(
                sort_enum, description="A field to sort on (ties in key order)."
            )

    def query_fields(self, index: int) -> list[StrawberryField]:
        name = self.name
        columns = self.columns

        def shown(row: dict[str, Any]) -> dict[str, Any]:
            return {py: row.get(column) for py, column in columns}

        async def page(info: strawberry.Info, **args: Any) -> dict[str, Any]:
            context: ReadContext = info.context
            grant = context.grants[name]

            async def read() -> dict[str, Any]:
                query = parse_query(self.params(args), grant)
                await _wait(
                    context, grant.product.view, args["lsn"], args["source"], args["timeoutMs"]
                )
                view = await context.views.ready(grant.product.view)
                found = await read_page(context.redis, view, grant, query)
                return {"rows": [shown(r) for r in found.rows], "next_cursor": found.next_cursor}

            result: dict[str, Any] = await _read(read)
            return result

        async def by_key(info: strawberry.Info, **args: Any) -> dict[str, Any] | None:
            context: ReadContext = info.context
            grant = context.grants[name]

            async def read() -> dict[str, Any] | None:
                await _wait(
                    context, grant.product.view, args["lsn"], args["source"], args["timeoutMs"]
                )
                view = await context.views.ready(grant.product.view)
                try:
                    return shown(await read_row(context.redis, view, grant, args["key"]))
                except NotFound:
                    return None

            result: dict[str, Any] | None = await _read(read)
            return result

        page_params = []
        if self.filter is not None:
            page_params.append(_param("filter", self.filter | None))
        if self.sort is not None:
            page_params.append(_param("sort", self.sort | None))
        page_params += [
            _param(
                "limit",
                Annotated[
                    int | None,
                    strawberry.argument(description="Rows per page, 1 to 1000 (default 100)."),
                ],
            ),
            _param(
                "cursor",
                Annotated[
                    str | None,
                    strawberry.argument(description="nextCursor of the previous page."),
                ],
            ),
            *_WAIT_PARAMS,
        ]
        key_text = (
            f"The value of {self.key[0]} as text."
            if len(self.key) == 1
            else f'A JSON array of the key\'s values ({", ".join(self.key)}), e.g. ["EU", 2024].'
        )
        key_params = [
            _param(
                "key",
                Annotated[str, strawberry.argument(description=key_text)],
                inspect.Parameter.empty,
            ),
            *_WAIT_PARAMS,
        ]
        return [
            _field(
                f"p{index}",
                name,
                resolver=_resolver(page, page_params, self.page | None),
                description=f"A page of rows of {name} (keyset pagination with cursors).",
            ),
            _field(
                f"k{index}",
                f"{name}ByKey",
                resolver=_resolver(by_key, key_params, self.row | None),
                description=f"The row of {name} with this key; null if there is none.",
            ),
        ]

    def params(self, args: dict[str, Any]) -> list[tuple[str, str]]:
        """The REST query parameters that say what ``args`` say."""
        out: list[tuple[str, str]] = []
        where = args.get("filter")
        for py, name in self.filters if where is not None else ():
            condition: FieldCondition | None = getattr(where, py)
            if condition is None:
                continue
            for op in OPS:
                value = getattr(condition, op)
                if value is not None:
                    out.append((f"{name}.{op}", value))
            if condition.is_null is not None:
                out.append((f"{name}.null", "true" if condition.is_null else "false"))
        sort = args.get("sort")
        if sort is not None:
            out.append(("sort", sort.value))
        if args["limit"] is not None:
            out.append(("limit", str(args["limit"])))
        if args["cursor"] is not None:
            out.append(("cursor", args["cursor"]))
        return out


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: Any | None = None
    ) -> None:
        # What reaches here is the client's doing (a query that does not validate, a bad
        # filter value): a failure of serve itself was logged where it happened (_read).
        for error in errors:
            log.debug("GraphQL error: %s", error.message)


@dataclass(frozen=True)
class ProductSchema:
    """The schema of one access: ``products`` are the products it has query fields for."""

    schema: strawberry.Schema
    products: tuple[str, ...]


def build_schema(grants: Sequence[Grant]) -> ProductSchema:
    """The schema of a key that reads the products of ``grants`` under their roles."""
    fields: list[StrawberryField] = []
    products: list[str] = []
    for index, grant in enumerate(sorted(grants, key=lambda g: g.product.name)):
        name = grant.product.name
        if _PRODUCT_NAME.fullmatch(name) is None:
            log.warning("product %r: not a GraphQL name of ours; left out of GraphQL", name)
            continue
        types = _ProductTypes(grant)
        if not types.usable:
            log.warning("product %s: no field has a GraphQL name; left out of GraphQL", name)
            continue
        fields += types.query_fields(index)
        products.append(name)
    listed = tuple(products)

    async def readable(info: strawberry.Info) -> list[str]:
        return list(listed)

    fields.append(
        _field(
            "readable",
            "_products",
            resolver=_resolver(readable, (), list[str]),
            description="The products this API key may read over GraphQL.",
        )
    )
    query = create_type("Query", fields)
    schema = _Schema(
        query=query,
        config=_CONFIG,
        extensions=[
            lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        ],
    )
    return ProductSchema(schema, listed)


class SchemaCache:
    """Schemas by (catalog version, (product, generation, role) of each readable product)."""

    def __init__(self, size: int = MAX_SCHEMAS) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._schemas: OrderedDict[tuple[Any, ...], ProductSchema] = OrderedDict()

    def get(self, version: int, grants: Sequence[Grant]) -> ProductSchema:
        """The schema for ``grants``; ``version`` must be read before the grants were."""
        access = tuple(sorted((g.product.name, g.product.generation, g.role) for g in grants))
        key = (version, access)
        with self._lock:
            found = self._schemas.get(key)
            if found is not None:
                self._schemas.move_to_end(key)
                return found
        built = build_schema(grants)
        with self._lock:
            self._schemas[key] = built
            while len(self._schemas) > self._size:
                self._schemas.popitem(last=False)
        return built

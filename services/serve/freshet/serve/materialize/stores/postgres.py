"""Views as plain PostgreSQL tables in the target database (SQLAlchemy Core, psycopg 3).

Layout, in the schema ``serve_target_schema`` (``freshet`` by default):

* ``<schema>.<view>``: one table per view, named after it. Its columns are the view's output
  columns, then the key fields that are not output columns (``_key<n>``), typed from the view's
  PostgreSQL types (:func:`column_type`). The view's key is the table's ``PRIMARY KEY`` when no
  key field can be NULL; otherwise (a ``GROUP BY`` value, a ``LEFT JOIN``'s missing side, a
  ``DISTINCT`` column) PostgreSQL's primary key cannot hold it and the key is a ``UNIQUE NULLS
  NOT DISTINCT`` constraint (PostgreSQL 15 or later), which ``ON CONFLICT`` uses the same way.
  A view without key fields (an aggregate without ``GROUP BY``) has at most one row and no
  constraint. The constraint is named ``<view>_key``.
* ``<schema>._views``: what serve built, per view: the generation and its layout (JSON).
* ``<schema>._offsets``: per view, generation and view-topic partition, the next offset to apply
  and the ``freshet.applied`` header (``{source: lsn}``) of the last record applied there.

A batch is one transaction: it locks the view's ``_views`` row (shared) and its ``_offsets``
rows, checks they are the ones the writer expects, deletes and upserts
(``INSERT ... ON CONFLICT DO UPDATE``) the rows, and moves the offsets. When every column of a
view has a type whose JSON form on the view topic is also PostgreSQL's text input for it
(:data:`FROM_JSON_TEXT`), the upserts of a batch are one statement with one parameter, the
batch's rows as a JSON array, which PostgreSQL takes apart (``jsonb_array_elements``, ``->>``
and a cast per column): serve then spends no Python per value, which matters because its
materializers share one interpreter with the API. Other views' rows are decoded in Python and
bound value by value. A new generation of a
view keeps its table (and so the grants and SQL views that depend on it): the table is truncated
and altered (columns added, dropped or retyped; key constraint replaced) in the transaction
that resets the offsets, then refilled from the beginning of the topic.

Every statement is built by SQLAlchemy; identifiers are quoted by its PostgreSQL dialect and
values are always bound parameters.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    cast,
    create_engine,
    delete,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.schema import AddConstraint, CreateSchema, CreateTable, DropTable
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from freshet.common.sql.types import is_array
from freshet.serve.exceptions import BadValueError, Fenced, StaleGeneration, TableConflictError
from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.base import ViewStore

log = logging.getLogger(__name__)

_LOCK_CLASS = 0x46535256  # "FSRV": the first key of serve's advisory locks
_CATALOG_LOCK = 0


def column_type(type_: str) -> TypeEngine[Any]:
    """The SQLAlchemy type of a column of the view type ``type_`` (a canonical name).

    Types the compiler does not produce (``unknown``) are ``text``; json and jsonb store SQL
    NULL for a NULL field (never the JSON ``null``).
    """
    if is_array(type_):
        element = column_type(type_[:-2])
        return postgresql.ARRAY(element, dimensions=None)
    factory = _TYPES.get(type_)
    return factory() if factory is not None else postgresql.TEXT()


_TYPES: dict[str, Any] = {
    "bool": postgresql.BOOLEAN,
    "int2": postgresql.SMALLINT,
    "int4": postgresql.INTEGER,
    "int8": postgresql.BIGINT,
    "numeric": lambda: postgresql.NUMERIC(asdecimal=True),
    "float4": postgresql.REAL,
    "float8": postgresql.DOUBLE_PRECISION,
    "text": postgresql.TEXT,
    "uuid": lambda: postgresql.UUID(as_uuid=False),
    "date": postgresql.DATE,
    "time": lambda: postgresql.TIME(timezone=False),
    "timetz": lambda: postgresql.TIME(timezone=True),
    "timestamp": lambda: postgresql.TIMESTAMP(timezone=False),
    "timestamptz": lambda: postgresql.TIMESTAMP(timezone=True),
    "interval": postgresql.INTERVAL,
    "json": lambda: postgresql.JSON(none_as_null=True),
    "jsonb": lambda: postgresql.JSONB(none_as_null=True),
    "bytea": postgresql.BYTEA,
}


FROM_JSON_TEXT = frozenset(
    {"bool", "int2", "int4", "int8", "numeric", "text", "uuid", "date", "time", "timestamp"}
    | {"timestamptz"}
)
"""View types whose JSON value on a view topic, as text (``->>``), is PostgreSQL's input for the
same value: booleans, integers, numerics as strings (``NaN`` and infinities included), text,
uuids, ISO dates, times and timestamps (a timestamptz always with its ``Z``). Not floats (JSON
has no negative zero once PostgreSQL reads it as jsonb), nor bytea (base64), intervals, timetz,
json or arrays."""


def constraint_name(view: str) -> str:
    """``<view>_key``, shortened with a hash when it would pass PostgreSQL's 63 bytes."""
    name = f"{view}_key"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(view.encode()).hexdigest()[:8]
    return f"{view[:50]}_{digest}_key"


def view_table(layout: ViewLayout, metadata: MetaData) -> Table:
    """The table of ``layout`` in ``metadata`` (column keys ``c0``, ``c1``... in order)."""
    key = set(layout.key_names)
    not_null = {k.name for k in layout.key if not k.nullable}
    columns = [
        Column(c.name, column_type(c.type), key=f"c{i}", nullable=c.name not in not_null)
        for i, c in enumerate(layout.table_columns)
    ]
    table = Table(layout.name, metadata, *columns)
    by_name = {c.name: c for c in columns}
    key_columns = [by_name[k] for k in layout.key_names]
    if key_columns and not_null >= key:
        table.append_constraint(
            PrimaryKeyConstraint(*key_columns, name=constraint_name(layout.name))
        )
    elif key_columns:
        table.append_constraint(
            UniqueConstraint(
                *key_columns,
                name=constraint_name(layout.name),
                postgresql_nulls_not_distinct=True,
            )
        )
    return table


class PostgresTarget:
    """The target database: the engine, the schema and serve's own tables in it.

    One per process, shared by the stores of every view (the engine's pool is thread-safe).
    """

    def __init__(self, url: str, schema: str, pool_size: int = 5) -> None:
        self.engine: Engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"connect_timeout": 5},
        )
        self.schema = schema
        self.metadata = MetaData(schema=schema)
        self.views = Table(
            "_views",
            self.metadata,
            Column("view", Text, primary_key=True),
            Column("generation", BigInteger, nullable=False),
            Column("layout", postgresql.JSONB, nullable=False),
            Column(
                "updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()
            ),
        )
        self.offsets = Table(
            "_offsets",
            self.metadata,
            Column("view", Text, primary_key=True),
            Column("generation", BigInteger, primary_key=True),
            Column("partition", Integer, primary_key=True),
            Column("next_offset", BigInteger, nullable=False),
            Column("applied", postgresql.JSONB(none_as_null=True), nullable=True),
            Column(
                "updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()
            ),
        )
        self._ensured = False

    def ensure(self) -> None:
        """Create the schema and serve's tables if they are missing (once per process)."""
        if self._ensured:
            return
        with self.engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(_LOCK_CLASS, _CATALOG_LOCK)))
            conn.execute(CreateSchema(self.schema, if_not_exists=True))
            self.metadata.create_all(conn, tables=[self.views, self.offsets], checkfirst=True)
        self._ensured = True

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def lock_view(self, conn: Connection, view: str) -> None:
        """Serialize DDL and drops of one view across replicas (until the transaction ends)."""
        conn.execute(
            select(
                func.pg_advisory_xact_lock(
                    _LOCK_CLASS, func.hashtext(bindparam("v", f"{self.schema}.{view}"))
                )
            )
        )

    def built(self) -> dict[str, int]:
        """Every view serve built here, with its generation."""
        self.ensure()
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.views.c.view, self.views.c.generation)).all()
        return {view: int(gen) for view, gen in rows}

    def drop(self, view: str) -> bool:
        """Drop the view's table and positions; False if serve had built nothing for it."""
        self.ensure()
        with self.engine.begin() as conn:
            self.lock_view(conn, view)
            known = conn.execute(delete(self.views).where(self.views.c.view == view)).rowcount
            conn.execute(delete(self.offsets).where(self.offsets.c.view == view))
            if known:
                conn.execute(DropTable(Table(view, MetaData(schema=self.schema)), if_exists=True))
        if known:
            log.info("postgres: dropped %s.%s", self.schema, view)
        return bool(known)

    def close(self) -> None:
        self.engine.dispose()


def _quote_table(conn: Connection, table: Table) -> str:
    return str(conn.dialect.identifier_preparer.format_table(table))


def _quote(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


class PostgresStore(ViewStore):
    """One view generation as a table of the target database (see the module docstring)."""

    kind = "postgres"

    def __init__(
        self, target: PostgresTarget, layout: ViewLayout, batch_interval_s: float = 0.0
    ) -> None:
        self.batch_interval_s = batch_interval_s
        self._target = target
        self._layout = layout
        self.table = view_table(layout, MetaData(schema=target.schema))
        self._columns = list(self.table.columns)
        self._key_columns = [self.table.c[f"c{i}"] for i in self._key_positions()]
        key_keys = {c.key for c in self._key_columns}
        insert = pg_insert(self.table)
        values = {c.key: insert.excluded[c.key] for c in self._columns if c.key not in key_keys}
        if not self._key_columns:
            self._upsert = insert
        elif values:
            self._upsert = insert.on_conflict_do_update(
                index_elements=self._key_columns, set_=values
            )
        else:
            self._upsert = insert.on_conflict_do_nothing(index_elements=self._key_columns)
        self._deletes: dict[tuple[bool, ...], Any] = {}
        self._decode_row = layout.row_decoder()
        self.rows_as_json = self._from_json_text()
        """True: upserts bind a batch's rows as one JSON array (see the module docstring)."""
        self._upsert_json = self._json_upsert() if self.rows_as_json else None

    def _from_json_text(self) -> bool:
        """True if PostgreSQL can take this view's rows apart itself (see the module docstring)."""
        layout = self._layout
        return (
            bool(self._key_columns)
            and not layout.key_only
            and all(c.type in FROM_JSON_TEXT for c in layout.columns)
        )

    def _json_upsert(self) -> Any:
        """The upsert of the rows in the JSON array bound to ``rows``, one row per element."""
        rows = func.jsonb_array_elements(cast(bindparam("rows", type_=Text()), postgresql.JSONB))
        element = rows.table_valued("value").alias("r").c.value
        fields = select(
            *(
                cast(element.op("->>")(literal(c.name, Text())), c.type).label(c.name)
                for c in self._columns
            )
        )
        insert = pg_insert(self.table).from_select([c.key for c in self._columns], fields)
        key_keys = {c.key for c in self._key_columns}
        values = {c.key: insert.excluded[c.key] for c in self._columns if c.key not in key_keys}
        if values:
            return insert.on_conflict_do_update(index_elements=self._key_columns, set_=values)
        return insert.on_conflict_do_nothing(index_elements=self._key_columns)

    def _key_positions(self) -> list[int]:
        names = [c.name for c in self._layout.table_columns]
        return [names.index(k) for k in self._layout.key_names]

    # --- open: DDL ------------------------------------------------------------------------

    def open(self, partitions: list[int]) -> dict[int, int]:
        target = self._target
        target.ensure()
        layout = self._layout
        views, offsets = target.views, target.offsets
        with target.engine.begin() as conn:
            target.lock_view(conn, layout.name)
            row = conn.execute(
                select(views.c.generation, views.c.layout).where(views.c.view == layout.name)
            ).first()
            if row is not None and int(row.generation) > layout.generation:
                raise StaleGeneration(
                    f"{target.schema}.{layout.name} holds generation {row.generation}, newer "
                    f"than {layout.generation}"
                )
            # The same generation with other fields: a view deleted and created again under its
            # name before serve could drop it. Built again like a new generation.
            if (
                row is None
                or int(row.generation) != layout.generation
                or row.layout != layout.describe()
            ):
                self._build(conn, row.layout if row is not None else None)
                conn.execute(delete(offsets).where(offsets.c.view == layout.name))
                conn.execute(
                    pg_insert(views)
                    .values(
                        view=layout.name, generation=layout.generation, layout=layout.describe()
                    )
                    .on_conflict_do_update(
                        index_elements=[views.c.view],
                        set_={
                            "generation": layout.generation,
                            "layout": layout.describe(),
                            "updated_at": func.now(),
                        },
                    )
                )
            if partitions:
                conn.execute(
                    pg_insert(offsets)
                    .values(
                        [
                            {
                                "view": layout.name,
                                "generation": layout.generation,
                                "partition": p,
                                "next_offset": 0,
                            }
                            for p in partitions
                        ]
                    )
                    .on_conflict_do_nothing()
                )
            held = conn.execute(
                select(offsets.c.partition, offsets.c.next_offset).where(
                    offsets.c.view == layout.name, offsets.c.generation == layout.generation
                )
            ).all()
        return {int(p): int(o) for p, o in held}

    def _build(self, conn: Connection, old: Mapping[str, Any] | None) -> None:
        """Create the table, or empty and alter the one an older generation left."""
        table = self.table
        exists = conn.dialect.has_table(conn, table.name, schema=table.schema)
        if not exists:
            conn.execute(CreateTable(table))
            log.info("postgres: created %s", _quote_table(conn, table))
            return
        if old is None:
            raise TableConflictError(
                f"the table {_quote_table(conn, table)} exists but serve did not create it: "
                "drop or rename it, or choose another serve_target_schema"
            )
        name = _quote_table(conn, table)
        conn.execute(text(f"TRUNCATE {name}"))
        constraint = _quote(conn, constraint_name(table.name))
        conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {constraint}"))
        old_columns = {c["name"]: c["type"] for c in _table_columns(old)}
        new_columns = {c.name: c for c in table.columns}
        new_types = {c.name: c.type for c in self._layout.table_columns}
        for gone in old_columns:
            if gone not in new_columns:
                conn.execute(text(f"ALTER TABLE {name} DROP COLUMN {_quote(conn, gone)}"))
        for column_name, column in new_columns.items():
            ddl_type = column.type.compile(dialect=conn.dialect)
            q = _quote(conn, column_name)
            if column_name not in old_columns:
                conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {q} {ddl_type}"))
                continue
            if old_columns[column_name] != new_types[column_name]:
                conn.execute(
                    text(f"ALTER TABLE {name} ALTER COLUMN {q} TYPE {ddl_type} USING NULL")
                )
            conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN {q} DROP NOT NULL"))
        for key in table.constraints:
            if isinstance(key, PrimaryKeyConstraint | UniqueConstraint) and key.columns:
                conn.execute(AddConstraint(key))
        log.info(
            "postgres: emptied and altered %s for generation %d", name, self._layout.generation
        )

    # --- write ----------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        target = self._target
        layout = self._layout
        views, offsets = target.views, target.offsets
        with target.engine.begin() as conn:
            generation = conn.execute(
                select(views.c.generation)
                .where(views.c.view == layout.name)
                .with_for_update(read=True)
            ).scalar()
            if generation is None or int(generation) != layout.generation:
                if generation is not None and int(generation) > layout.generation:
                    raise StaleGeneration(f"generation {generation} of {layout.name} took over")
                raise Fenced(
                    f"{target.schema}._views no longer holds generation {layout.generation} of "
                    f"{layout.name}"
                )
            held = dict(
                conn.execute(
                    select(offsets.c.partition, offsets.c.next_offset)
                    .where(
                        offsets.c.view == layout.name,
                        offsets.c.generation == layout.generation,
                        offsets.c.partition.in_(list(batch.start)),
                    )
                    .with_for_update()
                ).all()
            )
            for partition, start in batch.start.items():
                if int(held.get(partition, 0)) != start:
                    raise Fenced(
                        f"{layout.name} partition {partition} is at offset "
                        f"{held.get(partition, 0)}, not {start}"
                    )
            self._apply(conn, batch)
            moved = pg_insert(offsets)
            conn.execute(
                moved.values(
                    [
                        {
                            "view": layout.name,
                            "generation": layout.generation,
                            "partition": p,
                            "next_offset": end,
                            "applied": orjson.loads(batch.applied[p])
                            if p in batch.applied
                            else None,
                        }
                        for p, end in batch.end.items()
                    ]
                ).on_conflict_do_update(
                    index_elements=[offsets.c.view, offsets.c.generation, offsets.c.partition],
                    set_={
                        "next_offset": moved.excluded.next_offset,
                        "applied": func.coalesce(moved.excluded.applied, offsets.c.applied),
                        "updated_at": func.now(),
                    },
                )
            )

    def _apply(self, conn: Connection, batch: Batch) -> None:
        keys = [c.key for c in self._columns]
        if not self._key_columns:
            if batch.changes:
                last = list(batch.changes.values())[-1]
                conn.execute(delete(self.table))
                if last.row is not None:
                    values = self._decode_row(last.row, last.key_values)
                    conn.execute(self._upsert, [dict(zip(keys, values, strict=True))])
            return
        deletes: dict[tuple[bool, ...], list[dict[str, Any]]] = {}
        for change in batch.deletes:
            nulls = tuple(v is None for v in change.key_values)
            params = {f"k{i}": v for i, v in enumerate(change.key_values) if v is not None}
            deletes.setdefault(nulls, []).append(params)
        for nulls, rows in deletes.items():
            conn.execute(self._delete(nulls), rows)
        if self.rows_as_json and self._upsert_json is not None:
            raws = [c.row for c in batch.upserts if c.row is not None]
            for raw in raws:
                if raw.lstrip(b" \t\r\n")[:1] != b"{":
                    raise BadValueError(f"view {self._layout.name}: a row is not a JSON object")
            if raws:
                conn.execute(self._upsert_json, {"rows": (b"[%s]" % b",".join(raws)).decode()})
            return
        upserts = [
            dict(zip(keys, self._decode_row(c.row, c.key_values), strict=True))
            for c in batch.upserts
            if c.row is not None
        ]
        if upserts:
            conn.execute(self._upsert, upserts)

    def _delete(self, nulls: tuple[bool, ...]) -> Any:
        """``DELETE ... WHERE`` each key field equal to its parameter, or ``IS NULL``."""
        statement = self._deletes.get(nulls)
        if statement is None:
            conditions: list[ColumnElement[bool]] = [
                column.is_(None) if null else column == bindparam(f"k{i}", type_=column.type)
                for i, (column, null) in enumerate(zip(self._key_columns, nulls, strict=True))
            ]
            statement = self._deletes[nulls] = delete(self.table).where(and_(*conditions))
        return statement


def _table_columns(layout: Mapping[str, Any]) -> list[dict[str, str]]:
    """The stored columns of a layout as :meth:`ViewLayout.describe` wrote it."""
    columns = [dict(c) for c in layout.get("columns", [])]
    names = {c["name"] for c in columns}
    columns.extend(
        {"name": k["name"], "type": k["type"]}
        for k in layout.get("key", [])
        if k["name"] not in names
    )
    return columns


__all__ = [
    "PostgresStore",
    "PostgresTarget",
    "column_type",
    "constraint_name",
    "view_table",
]

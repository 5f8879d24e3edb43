"""The compiler of view definitions: a PostgreSQL ``SELECT`` to an incremental plan.

A view is parsed with pglast (PostgreSQL's own parser) and compiled into a :class:`ViewPlan`:
its inputs (one per table reference, with the columns the view needs), a left-deep chain of
equi-joins, a row filter, and either a projection, a ``DISTINCT`` or a ``GROUP BY`` with
aggregates and ``HAVING``. Expressions compile to closures (:mod:`freshet.common.sql.expr`).
Transform's engine runs the plan incrementally; control compiles it only to refuse bad SQL with
the construct and its position, and to learn the view's key and columns.

The key of a view row is derived: the ``GROUP BY`` values, the primary keys of every joined table
(``NULL`` for the missing side of a ``LEFT JOIN``), every column for ``DISTINCT``, or nothing for
an aggregate without ``GROUP BY`` (one row). A key column that is also an output column takes its
name; one that is not is named ``_key<n>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from freshet.common.schemas import KeyColumn, OutputColumn, TableSchema
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import Compiled, compile_expr
from freshet.common.sql.types import canonical_type

AGGREGATES = frozenset({"count", "sum", "avg", "min", "max"})
_NUMERIC_SUM = {"int2": "int8", "int4": "int8", "int8": "numeric", "numeric": "numeric"}
_FLOAT = {"float4": "float4", "float8": "float8"}
_ORDERED = frozenset(
    {
        "int2",
        "int4",
        "int8",
        "numeric",
        "float4",
        "float8",
        "text",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "interval",
    }
)


class Catalog:
    """The tables a view may read: ``source.schema.table``, or shorter when unambiguous."""

    def __init__(self, tables: Iterable[TableSchema]) -> None:
        self._tables = {t.qualified: t for t in tables}

    def __len__(self) -> int:
        return len(self._tables)

    def resolve(self, parts: tuple[str, ...], position: int | None) -> TableSchema:
        """The table ``parts`` names: (source, schema, table), (schema, table) or (table,).

        Raises:
            SqlError: no such table, or a short name that more than one table matches.
        """
        name = ".".join(parts)
        if len(parts) == 3:
            found = [self._tables[name]] if name in self._tables else []
        elif len(parts) == 2:
            found = [t for t in self._tables.values() if (t.schema_name, t.table) == parts]
        else:
            found = [t for t in self._tables.values() if t.table == parts[0]]
        if not found:
            raise SqlError(f'relation "{name}" is not a table of any source', position)
        if len(found) > 1:
            options = ", ".join(sorted(t.qualified for t in found))
            raise SqlError(f'table name "{name}" is ambiguous: it may be {options}', position)
        return found[0]


@dataclass
class Input:
    """One table reference in ``FROM``; rows are tuples of ``columns`` (the ones the view uses)."""

    index: int
    alias: str
    table: TableSchema
    types: dict[str, str]
    columns: list[str] = field(default_factory=list)
    filter: Compiled | None = None
    """Conjuncts of ``WHERE`` (inner side) or ``ON`` (right side) that only read this input."""

    def position(self, column: str) -> int:
        if column not in self.columns:
            self.columns.append(column)
        return self.columns.index(column)

    @property
    def key_positions(self) -> tuple[int, ...]:
        return tuple(self.position(k) for k in self.table.primary_key)


@dataclass(frozen=True)
class Join:
    """``... JOIN inputs[right] ON left_keys = right_keys [AND residual]``."""

    right: int
    kind: str  # "inner" | "left"
    left_keys: tuple[Compiled, ...]
    """Over the tuple of the inputs before ``right``."""
    right_keys: tuple[Compiled, ...]
    """Over a one-row context: the right input's row tuple."""
    residual: Compiled | None
    """Other conditions of ``ON``, over the tuple including ``right``."""


@dataclass(frozen=True)
class Aggregate:
    func: str  # count, sum, avg, min, max
    arg: Compiled | None  # None for count(*)
    distinct: bool
    type: str  # the argument's type ("int8" for count(*))
    result_type: str


@dataclass
class ViewPlan:
    name: str
    sql: str
    inputs: list[Input]
    joins: list[Join]
    where: Compiled | None
    grouped: bool
    group_by: list[Compiled]
    aggregates: list[Aggregate]
    outputs: list[Compiled]
    """Over the joined tuple, or over ``(group values, aggregate values)`` when grouped."""
    having: Compiled | None
    distinct: bool
    columns: tuple[OutputColumn, ...]
    key: tuple[str, ...]
    key_sources: tuple[tuple[str, int], ...]
    """Where each key field comes from: ("group", i), ("pk", (input, pk position)) flattened as
    ("pk<input>", position in that input's row), or ("output", i)."""

    @property
    def key_columns(self) -> tuple[KeyColumn, ...]:
        """The key fields with their types, in the order of :attr:`key`.

        Only a primary-key column of a table that no ``LEFT JOIN`` null-extends is known never to
        be NULL; group values and ``DISTINCT`` columns may be.
        """
        null_extended = {j.right for j in self.joins if j.kind == "left"}
        out: list[KeyColumn] = []
        for name, (kind, pos) in zip(self.key, self.key_sources, strict=True):
            if kind == "group":
                type_, nullable = self.group_by[pos].type, True
            elif kind == "output":
                type_, nullable = self.columns[pos].type, True
            else:
                inp = self.inputs[int(kind[2:])]
                type_, nullable = inp.types[inp.columns[pos]], inp.index in null_extended
            out.append(KeyColumn(name=name, type=_concrete(type_), nullable=nullable))
        return tuple(out)

    @property
    def tables(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for i in self.inputs:
            seen.setdefault(i.table.qualified, None)
        return tuple(seen)


# --- scopes ---------------------------------------------------------------------------------


def _fields(node: Any) -> tuple[Any, ...]:
    """The name parts of a ColumnRef (pglast types them as optional)."""
    return tuple(node.fields or ())


def _deparse(node: Any) -> str:
    return str(RawStream()(node))


def _location(node: Any, offset: int = 0) -> int | None:
    loc = getattr(node, "location", None)
    if isinstance(loc, int) and loc >= 0:
        return loc - offset
    return None


class _TupleScope:
    """Column references over the joined tuple ``(row of input 0, row of input 1, ...)``.

    ``visible`` limits which inputs may be referenced (an ``ON`` sees only the inputs joined so
    far). ``used`` collects the inputs an expression read, for pushing filters down.
    """

    def __init__(self, inputs: list[Input], visible: int | None = None) -> None:
        self.inputs = inputs
        self.visible = len(inputs) if visible is None else visible
        self.used: set[int] = set()

    def _find(self, fields: tuple[str, ...], location: int) -> tuple[Input, str]:
        *qual, column = fields
        candidates = []
        for inp in self.inputs[: self.visible]:
            if qual and tuple(qual) not in _names_of(inp):
                continue
            if column in inp.types:
                candidates.append(inp)
        if not candidates:
            name = ".".join(fields)
            if qual and not any(tuple(qual) in _names_of(i) for i in self.inputs[: self.visible]):
                raise SqlError(f'missing FROM-clause entry for table "{".".join(qual)}"', location)
            raise SqlError(f'column "{name}" does not exist', location)
        if len(candidates) > 1:
            raise SqlError(f'column reference "{".".join(fields)}" is ambiguous', location)
        return candidates[0], column

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        inp, column = self._find(fields, location)
        self.used.add(inp.index)
        return _column_ref(inp, column)

    def special(self, node: Any) -> Compiled | None:
        return None


def _names_of(inp: Input) -> set[tuple[str, ...]]:
    t = inp.table
    if inp.alias != t.table:
        return {(inp.alias,)}
    return {(t.table,), (t.schema_name, t.table), (t.source, t.schema_name, t.table)}


def _column_ref(inp: Input, column: str) -> Compiled:
    a = inp.index
    p = inp.position(column)

    def get(t: Any) -> Any:
        row = t[a]
        return None if row is None else row[p]

    return Compiled(get, inp.types[column])


class _RowScope:
    """Column references over one input's row alone (right-side join keys, pushed filters)."""

    def __init__(self, inp: Input) -> None:
        self.inp = inp

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        p = self.inp.position(fields[-1])
        return Compiled(lambda row: row[p], self.inp.types[fields[-1]])

    def special(self, node: Any) -> Compiled | None:
        return None


class _GroupScope:
    """Expressions after ``GROUP BY``: context ``(group values, aggregate values)``."""

    def __init__(
        self,
        tuples: _TupleScope,
        group_nodes: list[Any],
        group_by: list[Compiled],
        aggregates: list[Aggregate],
        offset: int,
        clause: str,
    ) -> None:
        self.tuples = tuples
        self.offset = offset
        self.clause = clause
        self.group_keys = [self._identity(n) for n in group_nodes]
        self.group_by = group_by
        self.aggregates = aggregates

    def _identity(self, node: Any) -> Any:
        if isinstance(node, ast.ColumnRef) and not isinstance(_fields(node)[-1], ast.A_Star):
            fields = tuple(f.sval for f in _fields(node))
            probe = _TupleScope(self.tuples.inputs)
            inp, column = probe._find(fields, _location(node, self.offset) or 0)
            return ("column", inp.index, column)
        return ("expr", _deparse(node))

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        inp, column = self.tuples._find(fields, location)
        raise SqlError(
            f'column "{inp.alias}.{column}" must appear in the GROUP BY clause or be used in an '
            "aggregate function",
            location,
        )

    def special(self, node: Any) -> Compiled | None:
        if isinstance(node, ast.FuncCall) and _func_name(node) in AGGREGATES:
            return self._aggregate(node)
        if isinstance(node, ast.FuncCall | ast.ColumnRef | ast.A_Expr | ast.TypeCast):
            try:
                identity = self._identity(node)
            except SqlError:
                return None
            if identity in self.group_keys:
                g = self.group_keys.index(identity)
                return Compiled(lambda ctx: ctx[0][g], self.group_by[g].type)
        return None

    def _aggregate(self, node: ast.FuncCall) -> Compiled:
        name = _func_name(node)
        pos = _location(node, self.offset)
        if node.agg_filter is not None or node.agg_order or node.over is not None:
            raise SqlError(f"{name}() with FILTER, ORDER BY or OVER is not supported", pos)
        if node.agg_star:
            if name != "count":
                raise SqlError(f"{name}(*) is not valid", pos)
            agg = Aggregate("count", None, False, "int8", "int8")
        else:
            args = node.args or ()
            if len(args) != 1:
                raise SqlError(f"{name}() takes exactly one argument here", pos)
            arg = compile_expr(args[0], self.tuples, self.offset)
            agg = Aggregate(
                name, arg, bool(node.agg_distinct), arg.type, _result_type(name, arg.type, pos)
            )
        i = len(self.aggregates)
        self.aggregates.append(agg)
        return Compiled(lambda ctx: ctx[1][i], agg.result_type)


def _result_type(func: str, arg: str, position: int | None) -> str:
    if func == "count":
        return "int8"
    if func in ("min", "max"):
        if arg not in _ORDERED:
            raise SqlError(f"function {func}({arg}) does not exist", position)
        return arg
    if func == "sum":
        if arg in _NUMERIC_SUM:
            return _NUMERIC_SUM[arg]
        if arg in _FLOAT:
            return _FLOAT[arg] if arg == "float8" else "float4"
        if arg == "interval":
            return "interval"
    if func == "avg":
        if arg in _NUMERIC_SUM:
            return "numeric"
        if arg in _FLOAT:
            return "float8"
    raise SqlError(f"function {func}({arg}) does not exist", position)


def _func_name(node: ast.FuncCall) -> str:
    parts = [p.sval for p in node.funcname or ()]
    if len(parts) == 2 and parts[0] == "pg_catalog":
        return parts[1]
    return ".".join(parts)


# --- the compiler ---------------------------------------------------------------------------


def compile_view(name: str, sql: str, catalog: Catalog) -> ViewPlan:
    """Compile ``sql`` into a plan over ``catalog``.

    Raises:
        SqlError: the SQL does not parse, uses something views do not support (named, with its
            position), names an unknown table or column, or has a type error.
    """
    stmt = _parse(sql)
    _refuse_unsupported(stmt)
    inputs: list[Input] = []
    joins: list[Join] = []
    deferred_on: list[tuple[int, Any]] = []
    _from(stmt.fromClause or (), catalog, inputs, joins, deferred_on)
    _compile_joins(inputs, joins, deferred_on)

    scope = _TupleScope(inputs)
    where = _where(stmt.whereClause, inputs, joins)

    targets = _expand_targets(stmt.targetList or (), inputs)
    names = [_output_name(t) for t in targets]
    _check_unique(names, targets)

    aggregates: list[Aggregate] = []
    group_nodes = [_group_node(g, targets) for g in stmt.groupClause or ()]
    grouped = bool(group_nodes) or stmt.havingClause is not None or _has_aggregate(targets)
    group_by: list[Compiled] = []
    having = None
    if grouped:
        for g in group_nodes:
            compiled = compile_expr(g, scope, 0)
            group_by.append(compiled)
        gscope = _GroupScope(scope, group_nodes, group_by, aggregates, 0, "SELECT")
        outputs = [compile_expr(t.val, gscope, 0) for t in targets]
        if stmt.havingClause is not None:
            having = _boolean(
                compile_expr(stmt.havingClause, gscope, 0), stmt.havingClause, "HAVING"
            )
    else:
        outputs = [compile_expr(t.val, scope, 0) for t in targets]
    distinct = stmt.distinctClause is not None
    if distinct and grouped:
        raise SqlError(
            "SELECT DISTINCT together with GROUP BY or aggregates is not supported",
            _location(targets[0].val),
        )
    columns = tuple(
        OutputColumn(name=n, type=_concrete(c.type)) for n, c in zip(names, outputs, strict=True)
    )
    key, key_sources = _derive_key(inputs, targets, names, group_nodes, grouped, distinct, scope)
    for inp in inputs:
        inp.key_positions  # noqa: B018 - registers the primary key columns in every input
    return ViewPlan(
        name=name,
        sql=sql,
        inputs=inputs,
        joins=joins,
        where=where,
        grouped=grouped,
        group_by=group_by,
        aggregates=aggregates,
        outputs=outputs,
        having=having,
        distinct=distinct,
        columns=columns,
        key=key,
        key_sources=key_sources,
    )


def _concrete(type_: str) -> str:
    return "text" if type_ == "unknown" else type_


def _parse(sql: str) -> ast.SelectStmt:
    if not sql.strip():
        raise SqlError("the view's SQL is empty", 0)
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        message, location = exc.args[0], exc.args[1] if len(exc.args) > 1 else None
        raise SqlError(str(message), location) from None
    if len(statements) != 1:
        raise SqlError(
            "a view is exactly one SELECT statement",
            _location(statements[1].stmt) if len(statements) > 1 else 0,
        )
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        raise SqlError(f"a view is a SELECT statement, not {type(stmt).__name__}", 0)
    return stmt


def _refuse_unsupported(stmt: ast.SelectStmt) -> None:
    def refuse(what: str, node: Any) -> None:
        raise SqlError(
            f"{what} is not supported in a view", _location(node) if node is not None else None
        )

    if stmt.op != enums.SetOperation.SETOP_NONE:
        first = stmt.larg.targetList if stmt.larg is not None else None
        refuse("UNION / INTERSECT / EXCEPT", first[0] if first else None)
    if stmt.withClause is not None:
        refuse("WITH", stmt.withClause)
    if stmt.valuesLists:
        refuse("VALUES", None)
    if stmt.sortClause:
        raise SqlError(
            "ORDER BY is not supported in a view (a view is a set of rows; order when reading it)",
            _location(stmt.sortClause[0].node),
        )
    if stmt.limitCount is not None or stmt.limitOffset is not None:
        refuse("LIMIT / OFFSET", stmt.limitCount or stmt.limitOffset)
    if stmt.lockingClause:
        refuse("FOR UPDATE / FOR SHARE", None)
    if stmt.windowClause:
        refuse("WINDOW", None)
    if stmt.intoClause is not None:
        refuse("SELECT INTO", None)
    if stmt.groupDistinct:
        refuse("GROUP BY DISTINCT", None)
    if stmt.distinctClause and any(d is not None for d in stmt.distinctClause):
        refuse("DISTINCT ON", stmt.distinctClause[0])
    if not stmt.fromClause:
        raise SqlError("a view reads at least one table (FROM is missing)", None)
    for g in stmt.groupClause or ():
        if isinstance(g, ast.GroupingSet):
            refuse("GROUPING SETS / ROLLUP / CUBE", g)
    for node in _walk(stmt):
        if isinstance(node, ast.SubLink):
            refuse("a subquery", node)
        if isinstance(node, ast.RangeSubselect):
            raise SqlError("a subquery in FROM is not supported in a view", None)
        if isinstance(node, ast.RangeFunction):
            raise SqlError("a function in FROM is not supported in a view", None)
        if isinstance(node, ast.FuncCall) and node.over is not None:
            refuse("a window function", node)


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from _walk(getattr(node, attr))


def _from(
    clause: tuple[Any, ...],
    catalog: Catalog,
    inputs: list[Input],
    joins: list[Join],
    deferred_on: list[tuple[int, Any]],
) -> None:
    if len(clause) > 1:
        raise SqlError(
            "a comma between tables (a cross join) is not supported; use JOIN ... ON",
            _location(clause[1]) if isinstance(clause[1], ast.RangeVar) else None,
        )
    _from_item(clause[0], catalog, inputs, deferred_on)


def _from_item(
    node: Any, catalog: Catalog, inputs: list[Input], deferred_on: list[tuple[int, Any]]
) -> None:
    if isinstance(node, ast.RangeVar):
        parts = tuple(p for p in (node.catalogname, node.schemaname, node.relname) if p)
        table = catalog.resolve(parts, _location(node))
        alias = node.alias.aliasname if node.alias is not None else table.table
        if node.alias is not None and node.alias.colnames:
            raise SqlError("column aliases on a table are not supported", _location(node))
        if any(i.alias == alias for i in inputs):
            raise SqlError(f'table name "{alias}" specified more than once', _location(node))
        if not table.primary_key:
            raise SqlError(
                f"table {table.qualified} has no primary key; views need one to follow its rows",
                _location(node),
            )
        types = {c.name: canonical_type(c.type_oid, c.typmod) for c in table.columns}
        # Every reference to one table shares its column list, so all of them hold the same row
        # tuples and the engine keeps one row per primary key.
        same = [i.columns for i in inputs if i.table.qualified == table.qualified]
        columns = same[0] if same else []
        inputs.append(
            Input(index=len(inputs), alias=str(alias), table=table, types=types, columns=columns)
        )
        return
    if isinstance(node, ast.JoinExpr):
        kinds = {enums.JoinType.JOIN_INNER: "inner", enums.JoinType.JOIN_LEFT: "left"}
        if node.jointype not in kinds:
            label: dict[Any, str] = {
                enums.JoinType.JOIN_RIGHT: "RIGHT JOIN",
                enums.JoinType.JOIN_FULL: "FULL JOIN",
            }
            raise SqlError(
                f"{label.get(node.jointype, str(node.jointype))} is not supported (INNER and LEFT "
                "joins are; write a RIGHT JOIN as a LEFT JOIN with the tables swapped)",
                _location(node.rarg),
            )
        if node.isNatural:
            raise SqlError("NATURAL JOIN is not supported; use JOIN ... ON", _location(node.rarg))
        if node.alias is not None:
            raise SqlError("an alias on a join is not supported", _location(node.rarg))
        if not isinstance(node.rarg, ast.RangeVar):
            raise SqlError(
                "only a table may be on the right of a JOIN "
                "(parenthesised joins are not supported)",
                _location(node.rarg) if hasattr(node.rarg, "location") else None,
            )
        _from_item(node.larg, catalog, inputs, deferred_on)
        _from_item(node.rarg, catalog, inputs, deferred_on)
        right = len(inputs) - 1
        if node.usingClause:
            deferred_on.append((right, ("using", kinds[node.jointype], node.usingClause, node)))
        elif node.quals is None:
            raise SqlError(
                "a JOIN needs ON or USING (cross joins are not supported)", _location(node.rarg)
            )
        else:
            deferred_on.append((right, ("on", kinds[node.jointype], node.quals, node)))
        return
    raise SqlError(f"{type(node).__name__} in FROM is not supported in a view", _location(node))


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        out = []
        for arg in node.args or ():
            out.extend(_conjuncts(arg))
        return out
    return [node]


def _compile_joins(
    inputs: list[Input], joins: list[Join], deferred_on: list[tuple[int, Any]]
) -> None:
    for right, (form, kind, clause, node) in deferred_on:
        inp = inputs[right]
        left_keys: list[Compiled] = []
        right_keys: list[Compiled] = []
        residual: list[Compiled] = []
        pushed: list[Compiled] = []
        if form == "using":
            for col in clause:
                column = col.sval
                left = _TupleScope(inputs, visible=right)
                left_keys.append(left.column((column,), _location(node.rarg) or 0))
                if column not in inp.types:
                    raise SqlError(
                        f'column "{column}" specified in USING clause does not exist in the '
                        "right table",
                        _location(node.rarg),
                    )
                right_keys.append(_column_ref_row(inp, column))
        else:
            for conj in _conjuncts(clause):
                _classify_on(conj, inputs, right, left_keys, right_keys, residual, pushed)
            if not left_keys:
                raise SqlError(
                    "a JOIN condition needs an equality between a column of the joined table and "
                    "the tables before it",
                    _location(clause),
                )
        for l_key, r_key in zip(left_keys, right_keys, strict=True):
            _check_comparable(l_key.type, r_key.type, _location(node.rarg))
        if pushed:
            inp.filter = _and(pushed)
        joins.append(
            Join(
                right=right,
                kind=kind,
                left_keys=tuple(left_keys),
                right_keys=tuple(right_keys),
                residual=_and(residual) if residual else None,
            )
        )


def _column_ref_row(inp: Input, column: str) -> Compiled:
    p = inp.position(column)
    return Compiled(lambda row: row[p], inp.types[column])


_KEY_FAMILY = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "numeric": "num",
    "float4": "num",
    "float8": "num",
}


def _check_comparable(left: str, right: str, position: int | None) -> None:
    if left == right or "unknown" in (left, right):
        return
    lf, rf = _KEY_FAMILY.get(left, left), _KEY_FAMILY.get(right, right)
    if lf == rf:
        return
    if {lf, rf} == {"int", "num"}:
        return
    raise SqlError(f"operator does not exist: {left} = {right} (in a JOIN condition)", position)


def _classify_on(
    conj: Any,
    inputs: list[Input],
    right: int,
    left_keys: list[Compiled],
    right_keys: list[Compiled],
    residual: list[Compiled],
    pushed: list[Compiled],
) -> None:
    if (
        isinstance(conj, ast.A_Expr)
        and conj.kind == enums.A_Expr_Kind.AEXPR_OP
        and len(conj.name or ()) == 1
        and conj.name[0].sval == "="  # type: ignore[index]
    ):
        sides = []
        for operand in (conj.lexpr, conj.rexpr):
            probe = _TupleScope(inputs, visible=right + 1)
            compile_expr(operand, probe, 0)
            sides.append(probe.used)
        left_side, right_side = sides
        if left_side and right_side and max(left_side) < right and right_side == {right}:
            left_keys.append(compile_expr(conj.lexpr, _TupleScope(inputs, visible=right), 0))
            right_keys.append(compile_expr(conj.rexpr, _RowScope(inputs[right]), 0))
            return
        if left_side and right_side and max(right_side) < right and left_side == {right}:
            left_keys.append(compile_expr(conj.rexpr, _TupleScope(inputs, visible=right), 0))
            right_keys.append(compile_expr(conj.lexpr, _RowScope(inputs[right]), 0))
            return
    probe = _TupleScope(inputs, visible=right + 1)
    compiled = _boolean(compile_expr(conj, probe, 0), conj, "JOIN/ON")
    if probe.used == {right}:
        pushed.append(compile_expr(conj, _RowScope(inputs[right]), 0))
    else:
        residual.append(compiled)


def _boolean(compiled: Compiled, node: Any, clause: str) -> Compiled:
    if compiled.type not in ("bool", "unknown"):
        raise SqlError(
            f"argument of {clause} must be type boolean, not type {compiled.type}", _location(node)
        )
    return compiled


def _and(parts: list[Compiled]) -> Compiled:
    if len(parts) == 1:
        return parts[0]
    fns = [p.fn for p in parts]

    def both(ctx: Any) -> bool | None:
        result: bool | None = True
        for fn in fns:
            value = fn(ctx)
            if value is False:
                return False
            if value is None:
                result = None
        return result

    return Compiled(both, "bool")


def _where(clause: Any, inputs: list[Input], joins: list[Join]) -> Compiled | None:
    """Compile ``WHERE``; conjuncts that read one input that no LEFT JOIN can null move into it."""
    if clause is None:
        return None
    nullable = {j.right for j in joins if j.kind == "left"}
    rest: list[Compiled] = []
    pushed: dict[int, list[Compiled]] = {}
    for conj in _conjuncts(clause):
        probe = _TupleScope(inputs)
        compiled = _boolean(compile_expr(conj, probe, 0), conj, "WHERE")
        if len(probe.used) == 1 and not (probe.used & nullable):
            (index,) = probe.used
            pushed.setdefault(index, []).append(compile_expr(conj, _RowScope(inputs[index]), 0))
        else:
            rest.append(compiled)
    for index, parts in pushed.items():
        inp = inputs[index]
        inp.filter = _and(([inp.filter] if inp.filter else []) + parts)
    return _and(rest) if rest else None


def _expand_targets(targets: tuple[Any, ...], inputs: list[Input]) -> list[ast.ResTarget]:
    out: list[ast.ResTarget] = []
    for target in targets:
        val = target.val
        if isinstance(val, ast.ColumnRef) and isinstance(_fields(val)[-1], ast.A_Star):
            qual = tuple(f.sval for f in _fields(val)[:-1])
            chosen = [i for i in inputs if not qual or qual in _names_of(i)]
            if not chosen:
                raise SqlError(
                    f'missing FROM-clause entry for table "{".".join(qual)}"', _location(val)
                )
            for inp in chosen:
                for column in inp.types:
                    ref = ast.ColumnRef(
                        fields=(ast.String(sval=inp.alias), ast.String(sval=column))
                    )
                    ref.location = val.location
                    out.append(ast.ResTarget(name=column, val=ref, location=target.location))
        else:
            out.append(target)
    return out


def _output_name(target: ast.ResTarget) -> str:
    if target.name:
        return str(target.name)
    val = target.val
    if isinstance(val, ast.ColumnRef):
        return str(_fields(val)[-1].sval)
    if isinstance(val, ast.FuncCall):
        return _func_name(val).rsplit(".", 1)[-1]
    if isinstance(val, ast.TypeCast):
        inner = val.arg
        if isinstance(inner, ast.ColumnRef):
            return str(_fields(inner)[-1].sval)
        names = [n.sval for n in (val.typeName.names if val.typeName else None) or ()]
        return str(names[-1])
    if isinstance(val, ast.CoalesceExpr):
        return "coalesce"
    if isinstance(val, ast.CaseExpr):
        return "case"
    if isinstance(val, ast.MinMaxExpr):
        return "greatest" if val.op == enums.MinMaxOp.IS_GREATEST else "least"
    if isinstance(val, ast.A_Expr) and val.kind == enums.A_Expr_Kind.AEXPR_NULLIF:
        return "nullif"
    return "?column?"


def _check_unique(names: list[str], targets: list[ast.ResTarget]) -> None:
    seen: set[str] = set()
    for name, target in zip(names, targets, strict=True):
        if name in seen:
            raise SqlError(
                f'column "{name}" specified more than once; give one of them an alias (AS ...)',
                _location(target),
            )
        seen.add(name)


def _group_node(node: Any, targets: list[ast.ResTarget]) -> Any:
    """``GROUP BY 2`` and ``GROUP BY alias`` name a select item, as in PostgreSQL."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        n = int(node.val.ival or 0)
        if not 1 <= n <= len(targets):
            raise SqlError(f"GROUP BY position {n} is not in select list", _location(node))
        return targets[n - 1].val
    if isinstance(node, ast.ColumnRef) and len(_fields(node)) == 1:
        name = _fields(node)[0].sval
        for target in targets:
            if target.name == name:
                return target.val
    return node


def _has_aggregate(targets: list[ast.ResTarget]) -> bool:
    return any(
        isinstance(n, ast.FuncCall) and _func_name(n) in AGGREGATES and n.over is None
        for t in targets
        for n in _walk(t.val)
    )


def _derive_key(
    inputs: list[Input],
    targets: list[ast.ResTarget],
    names: list[str],
    group_nodes: list[Any],
    grouped: bool,
    distinct: bool,
    scope: _TupleScope,
) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    if distinct and not grouped:
        return tuple(names), tuple(("output", i) for i in range(len(names)))
    taken = set(names)
    key: list[str] = []
    sources: list[tuple[str, int]] = []

    def fresh() -> str:
        n = len(key) + 1
        while f"_key{n}" in taken:
            n += 1
        taken.add(f"_key{n}")
        return f"_key{n}"

    if grouped:
        target_ids = [_deparse(t.val) for t in targets]
        for g, node in enumerate(group_nodes):
            text = _deparse(node)
            if text in target_ids:
                key.append(names[target_ids.index(text)])
            else:
                key.append(fresh())
            sources.append(("group", g))
        return tuple(key), tuple(sources)
    plain: dict[tuple[int, str], str] = {}
    for name, target in zip(names, targets, strict=True):
        if isinstance(target.val, ast.ColumnRef):
            probe = _TupleScope(inputs)
            probe.column(tuple(f.sval for f in _fields(target.val)), 0)
            (index,) = probe.used
            plain.setdefault((index, str(_fields(target.val)[-1].sval)), name)
    for inp in inputs:
        for column in inp.table.primary_key:
            key.append(plain.get((inp.index, column)) or fresh())
            sources.append((f"pk{inp.index}", inp.position(column)))
    return tuple(key), tuple(sources)


Evaluator = Callable[[Any], Any]

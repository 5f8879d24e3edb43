"""The safe SQL expression language: PostgreSQL expressions compiled to Python closures.

``parse_expression`` parses a standalone expression with pglast (PostgreSQL's parser);
``compile_expr`` turns a pglast expression node into a :class:`Compiled` closure with its type,
resolving operators, functions and the types of untyped literals with PostgreSQL's own rules
(:mod:`freshet.common.sql.functions`). User text is never evaluated as Python.

Everything Freshet refuses at compile time raises :class:`SqlError` with the position in the
user's text; a value PostgreSQL would refuse at run time (division by zero, integer overflow,
invalid text in a cast) raises :class:`EvalError` when the closure runs.

Supported: literals, column references (through the :class:`Scope`), ``+ - * / %`` and unary
minus, comparisons, ``AND OR NOT``, ``IS [NOT] NULL|TRUE|FALSE|UNKNOWN``,
``IS [NOT] DISTINCT FROM``, ``[NOT] IN (list)``, ``[NOT] BETWEEN [SYMMETRIC]``,
``[NOT] LIKE|ILIKE [ESCAPE]``, ``CASE``, ``COALESCE``, ``NULLIF``, ``GREATEST``, ``LEAST``,
casts (``CAST(x AS t)``, ``x::t``, ``date '...'``), ``||``, ``->``/``->>`` on json and jsonb,
and the functions of :data:`functions.FUNCTIONS` plus ``concat``, ``concat_ws``, ``extract``.
As in PostgreSQL, calls on constants are folded at compile time, so ``1/0`` or ``70000::int2``
refuse the definition. Values follow a session with ``TimeZone=UTC``, ``DateStyle=ISO`` and
``IntervalStyle=postgres``, and a database collation ordering text by code point (``C.UTF-8``).

Refused: subqueries, window functions, aggregates (unless the scope's ``special`` takes them),
``ANY``/``ALL`` over arrays, ``SIMILAR TO`` and regular expressions, ``AT TIME ZONE``,
``COLLATE``, array constructors and subscripts, ``character(n)``, intervals with months or
years, ``interval * float``, and functions depending on time or chance unless
``deterministic=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from freshet.common.sql import casts, functions, resolve
from freshet.common.sql import types as t
from freshet.common.sql.errors import SqlError
from freshet.common.sql.functions import ANYNONARRAY, Overload
from freshet.common.sql.types import EvalError

__all__ = [
    "Compiled",
    "EvalError",
    "Scope",
    "column_names",
    "compile_expr",
    "location",
    "parse_expression",
]

_PREFIX = "SELECT "


@dataclass(frozen=True)
class Compiled:
    """A compiled expression.

    ``fn(ctx)`` is its value (None for SQL NULL), ``type`` its canonical type name. What
    ``ctx`` is belongs to the :class:`Scope` that compiled it.
    """

    fn: Callable[[Any], Any]
    type: str


class Scope(Protocol):
    """What an expression can refer to.

    ``special`` is asked first about every node; returning a :class:`Compiled` replaces the
    node's normal compilation (the view compiler turns aggregate calls and GROUP BY expressions
    into slots this way), None compiles it normally. ``column`` resolves a column reference; it
    raises :class:`SqlError` naming the column when it is unknown or ambiguous; ``location`` is
    the reference's position in the user's text (the offset already subtracted).
    """

    def column(self, fields: tuple[str, ...], location: int) -> Compiled: ...

    def special(self, node: Any) -> Compiled | None: ...


def parse_expression(text: str) -> tuple[Any, int]:
    """Parse ``text`` as exactly one SQL expression.

    Returns the pglast node and the offset to subtract from node locations to get positions in
    ``text``. Raises :class:`SqlError` on a syntax error or on anything else than one
    expression (a second statement, a FROM clause, an alias, ``*``...).
    """
    source = _PREFIX + text
    offset = len(_PREFIX)
    try:
        statements = parse_sql(source)
    except ParseError as exc:
        cursor = exc.args[1] if len(exc.args) > 1 else None
        position = len(text)  # pglast gives no cursor for "at end of input"
        if isinstance(cursor, int):
            position = max(0, min(cursor - offset, len(text)))
        raise SqlError(f"syntax error: {exc.args[0]}", position) from None
    if len(statements) != 1:
        second = statements[1].stmt_location or 0 if len(statements) > 1 else len(source)
        raise SqlError(
            "an expression must be one expression, not several statements", max(0, second - offset)
        )
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt) or stmt.targetList is None:
        raise SqlError("not an expression", 0)
    if len(stmt.targetList) != 1:
        raise SqlError(
            "an expression must be exactly one expression, not a list",
            _pos(stmt.targetList[1], offset),
        )
    clauses = (
        "intoClause",
        "fromClause",
        "whereClause",
        "groupClause",
        "havingClause",
        "windowClause",
        "valuesLists",
        "sortClause",
        "limitCount",
        "limitOffset",
        "lockingClause",
        "withClause",
        "distinctClause",
    )
    for clause in clauses:
        if getattr(stmt, clause, None):
            raise SqlError("an expression cannot have clauses (FROM, WHERE, ORDER BY...)", None)
    if stmt.op != enums.SetOperation.SETOP_NONE:
        raise SqlError("an expression cannot be a UNION, INTERSECT or EXCEPT", None)
    target = stmt.targetList[0]
    if target.name is not None:
        raise SqlError("an expression cannot have an alias", _pos(target, offset))
    return target.val, offset


def column_names(node: Any) -> tuple[str, ...]:
    """The dotted parts of a ColumnRef (``'*'`` for a star)."""
    fields: Any = node.fields if isinstance(node, ast.ColumnRef) else node
    return tuple("*" if isinstance(f, ast.A_Star) else f.sval for f in fields)


def location(node: Any) -> int | None:
    """The node's character offset in the parsed text, or None when it has none."""
    loc = getattr(node, "location", None)
    return loc if isinstance(loc, int) and loc >= 0 else None


def _pos(node: Any, offset: int) -> int | None:
    loc = location(node)
    return None if loc is None else max(0, loc - offset)


def compile_expr(
    node: Any, scope: Scope, offset: int = 0, *, deterministic: bool = True
) -> Compiled:
    """Compile the pglast expression ``node`` against ``scope``.

    ``offset`` is subtracted from node locations to give error positions. With
    ``deterministic`` (views), functions depending on time or chance are refused.
    """
    return _Compiler(scope, offset, deterministic).compile(node)


def _type_list(types: Sequence[str]) -> str:
    return ", ".join(t.sql_name(x) for x in types)


@dataclass(frozen=True)
class _Constant(Compiled):
    """A compiled expression whose value is known at compile time (``fn`` ignores ``ctx``)."""


def _constant(value: Any, type: str) -> _Constant:
    return _Constant(_always(value), type)


def _always(value: Any) -> Callable[[Any], Any]:
    def constant(ctx: Any) -> Any:
        return value

    return constant


def _none(value: Any) -> None:
    return None


# --- the compiler ----------------------------------------------------------------------------

_NODE_NAMES = {
    "SubLink": "subqueries",
    "A_ArrayExpr": "ARRAY constructors",
    "RowExpr": "row constructors",
    "A_Indirection": "subscripts and field selection",
    "CollateClause": "COLLATE",
    "ParamRef": "parameters",
    "GroupingFunc": "GROUPING()",
    "A_Star": "*",
    "XmlExpr": "XML functions",
    "JsonIsPredicate": "IS JSON",
}


class _Compiler:
    def __init__(self, scope: Scope, offset: int, deterministic: bool) -> None:
        self.scope = scope
        self.offset = offset
        self.deterministic = deterministic
        self.here: int | None = None

    def pos(self, node: Any) -> int | None:
        """The node's position in the user's text.

        For a node without a location (pglast drops those of constants), the position of the
        nearest enclosing node that has one.
        """
        own = _pos(node, self.offset)
        return own if own is not None else self.here

    def compile(self, node: Any) -> Compiled:
        special = self.scope.special(node)
        if special is not None:
            return special
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            what = _NODE_NAMES.get(type(node).__name__, type(node).__name__)
            raise SqlError(f"{what} are not supported in expressions", self.pos(node))
        outer = self.here
        self.here = self.pos(node)
        try:
            result: Compiled = method(node)
        finally:
            self.here = outer
        return result

    # --- leaves ---

    def _A_Const(self, node: Any) -> Compiled:
        if node.isnull:
            return _constant(None, t.UNKNOWN)
        value = node.val
        if isinstance(value, ast.Integer):
            return _constant(value.ival, t.INT4)
        if isinstance(value, ast.Float):
            text = str(value.fval)
            number = Decimal(text)
            low, high = t.INT_RANGES[t.INT8]
            if text.lstrip("-").isdigit() and low <= number <= high:
                # An integer too large for the lexer's int4 (or a negated one): int4 if it fits.
                small = t.INT_RANGES[t.INT4][0] <= number <= t.INT_RANGES[t.INT4][1]
                return _constant(int(number), t.INT4 if small else t.INT8)
            return _constant(t.numeric(number), t.NUMERIC)
        if isinstance(value, ast.String):
            return _constant(value.sval, t.UNKNOWN)
        if isinstance(value, ast.Boolean):
            return _constant(bool(value.boolval), t.BOOL)
        raise SqlError("bit-string literals are not supported", self.pos(node))

    def _ColumnRef(self, node: Any) -> Compiled:
        fields = column_names(node)
        if "*" in fields:
            raise SqlError("* is not allowed in an expression", self.pos(node))
        return self.scope.column(fields, self.pos(node) or 0)

    # --- coercion ---

    def literal(self, compiled: Compiled, target: str, node: Any) -> Compiled:
        """An untyped literal as a constant of ``target`` (PostgreSQL's input function)."""
        text = compiled.fn(None)
        if text is None:
            return _constant(None, target)
        parse = casts.input_function(target) if not t.is_array(target) else None
        if parse is None:
            raise SqlError(
                f"literals of type {t.sql_name(target)} are not supported", self.pos(node)
            )
        try:
            value = parse(text)
        except EvalError as exc:
            raise SqlError(str(exc), self.pos(node)) from None
        return _constant(value, target)

    def converter(self, source: str, target: str, node: Any) -> Callable[[Any], Any] | None:
        """The value conversion from ``source`` to ``target`` (None when it is the identity)."""
        if source == target:
            return None
        if target == ANYNONARRAY:
            target = t.TEXT  # textanycat casts its other operand to text
        convert = casts.cast_function(source, target)
        if convert is None:
            raise SqlError(
                f"cannot cast type {t.sql_name(source)} to {t.sql_name(target)}", self.pos(node)
            )
        return convert

    def coerce(self, compiled: Compiled, target: str, node: Any) -> Compiled:
        if compiled.type == target:
            return compiled
        if compiled.type == t.UNKNOWN:
            return self.literal(compiled, target, node)
        convert = self.converter(compiled.type, target, node)
        assert convert is not None
        return self.call(_strict(convert, [None]), [compiled], target, node)

    def call(
        self, fn: Callable[..., Any], args: Sequence[Compiled], result: str, node: Any
    ) -> Compiled:
        """``fn`` applied to the values of ``args``, folded into a constant when they all are.

        PostgreSQL folds such calls when it plans the query, so an error there (``1/0``,
        ``70000::int2``) refuses the whole definition rather than a row.
        """
        if all(isinstance(a, _Constant) for a in args):
            try:
                value = fn(*(a.fn(None) for a in args))
            except EvalError as exc:
                raise SqlError(str(exc), self.pos(node)) from None
            return _constant(value, result)
        return Compiled(_call(fn, [a.fn for a in args]), result)

    def boolean(self, node: Any, construct: str) -> Compiled:
        compiled = self.compile(node)
        if compiled.type == t.UNKNOWN:
            return self.literal(compiled, t.BOOL, node)
        if compiled.type != t.BOOL:
            raise SqlError(
                f"argument of {construct} must be type boolean, not type "
                f"{t.sql_name(compiled.type)}",
                self.pos(node),
            )
        return compiled

    def common_type(self, items: list[Compiled], nodes: Sequence[Any], context: str) -> str:
        """PostgreSQL's select_common_type for CASE, COALESCE, GREATEST, LEAST."""
        known = [(c.type, n) for c, n in zip(items, nodes, strict=True) if c.type != t.UNKNOWN]
        if not known:
            return t.TEXT
        ptype = known[0][0]
        for ntype, node in known[1:]:
            if ntype == ptype:
                continue
            if resolve.category(ntype) != resolve.category(ptype):
                raise SqlError(
                    f"{context} types {t.sql_name(ptype)} and {t.sql_name(ntype)} cannot be "
                    "matched",
                    self.pos(node),
                )
            if (
                ptype not in resolve.PREFERRED
                and resolve.can_coerce(ptype, ntype)
                and not resolve.can_coerce(ntype, ptype)
            ):
                ptype = ntype
        for item, node in zip(items, nodes, strict=True):
            if not resolve.can_coerce(item.type, ptype):
                raise SqlError(
                    f"{context} could not convert type {t.sql_name(item.type)} to "
                    f"{t.sql_name(ptype)}",
                    self.pos(node),
                )
        return ptype

    # --- operators and functions ---

    def bind(
        self,
        overloads: Sequence[Overload],
        args: list[Compiled],
        nodes: Sequence[Any],
        describe: Callable[[], str],
        node: Any,
        binary_op: bool = False,
    ) -> tuple[Callable[..., Any], str, list[Compiled]]:
        """Resolve an overload among ``overloads``.

        ``describe()`` is the call's signature for messages: ``operator text + integer`` or
        ``function lower(integer)``. Returns the overload's function of the raw argument values
        (NULL-strict), its result type, and the arguments (untyped literals converted to
        constants of the parameter types).
        """
        same_arity = [o for o in overloads if len(o.args) == len(args)]
        chosen = resolve.select(same_arity, [a.type for a in args], binary_op)
        kind, _, signature = describe().partition(" ")
        if not chosen:
            if kind == "operator":
                raise SqlError(f"operator does not exist: {signature}", self.pos(node))
            raise SqlError(f"function {signature} does not exist", self.pos(node))
        if len(chosen) > 1:
            if kind == "operator":
                raise SqlError(f"operator is not unique: {signature}", self.pos(node))
            raise SqlError(f"function {signature} is not unique", self.pos(node))
        overload = chosen[0]
        if overload.impl is None:
            params = _type_list(overload.args)
            raise SqlError(f"{describe()} (as {params}) is not supported", self.pos(node))
        bound: list[Compiled] = []
        converters: list[Callable[[Any], Any] | None] = []
        for arg, param, arg_node in zip(args, overload.args, nodes, strict=True):
            if arg.type == t.UNKNOWN:
                bound.append(self.literal(arg, t.TEXT if param == ANYNONARRAY else param, arg_node))
                converters.append(None)
                continue
            convert = self.converter(arg.type, param, arg_node)
            if convert is not None and isinstance(arg, _Constant):
                # Convert a constant once, now, rather than at every evaluation.
                target = t.TEXT if param == ANYNONARRAY else param
                arg, convert = self.call(_strict(convert, [None]), [arg], target, arg_node), None
            bound.append(arg)
            converters.append(convert)
        return _strict(overload.impl, converters), overload.result, bound

    def operator(
        self, name: str, args: list[Compiled], nodes: Sequence[Any], node: Any
    ) -> tuple[Callable[..., Any], str, list[Compiled]]:
        def describe() -> str:
            if len(args) == 1:
                return f"operator {name} {t.sql_name(args[0].type)}"
            return f"operator {t.sql_name(args[0].type)} {name} {t.sql_name(args[1].type)}"

        if (
            len(args) == 2
            and args[0].type == args[1].type == t.UNKNOWN
            and name in (functions.COMPARISONS)
        ):
            # Two untyped literals compare as text, as in PostgreSQL.
            args = [self.literal(a, t.TEXT, n) for a, n in zip(args, nodes, strict=True)]
        overloads = functions.OPERATORS.get((name, len(args)))
        array = args[0].type if t.is_array(args[0].type) else None
        if array and name in functions.COMPARISONS and len(args) == 2:
            # anyarray comparisons: element by element in the element type's order.
            overloads = [Overload((array, array), t.BOOL, functions.comparison(name, array))]
        if not overloads:
            raise SqlError(f"operator {name} is not supported", self.pos(node))
        return self.bind(overloads, args, nodes, describe, node, binary_op=len(args) == 2)

    def apply(self, name: str, arg_nodes: Sequence[Any], node: Any) -> Compiled:
        args = [self.compile(a) for a in arg_nodes]
        fn, result, bound = self.operator(name, args, arg_nodes, node)
        return self.call(fn, bound, result, node)

    def _A_Expr(self, node: Any) -> Compiled:
        kind = node.kind
        name = node.name[-1].sval if node.name else ""
        K = enums.A_Expr_Kind
        if kind == K.AEXPR_OP:
            if node.lexpr is None:
                return self.apply(name, [node.rexpr], node)
            return self.apply(name, [node.lexpr, node.rexpr], node)
        if kind in (K.AEXPR_LIKE, K.AEXPR_ILIKE):
            return self.like(node, name)
        if kind in (K.AEXPR_DISTINCT, K.AEXPR_NOT_DISTINCT):
            return self.distinct(node, negate=kind == K.AEXPR_NOT_DISTINCT)
        if kind == K.AEXPR_NULLIF:
            return self.nullif(node)
        if kind == K.AEXPR_IN:
            return self.in_list(node, negate=name == "<>")
        if kind in (
            K.AEXPR_BETWEEN,
            K.AEXPR_NOT_BETWEEN,
            K.AEXPR_BETWEEN_SYM,
            K.AEXPR_NOT_BETWEEN_SYM,
        ):
            return self.between(node, kind)
        if kind in (K.AEXPR_OP_ANY, K.AEXPR_OP_ALL):
            raise SqlError("ANY/ALL with an array is not supported; use IN (...)", self.pos(node))
        raise SqlError("SIMILAR TO is not supported; use LIKE", self.pos(node))

    def comparison(
        self, name: str, left: Compiled, right: Compiled, nodes: Sequence[Any], node: Any
    ) -> tuple[Callable[[Any, Any], Any], list[Compiled]]:
        fn, result, bound = self.operator(name, [left, right], nodes, node)
        if result != t.BOOL:
            raise SqlError(f"operator {name} must return boolean", self.pos(node))
        return fn, bound

    def like(self, node: Any, name: str) -> Compiled:
        negate = name.startswith("!")
        insensitive = name.endswith("*")
        pattern_node: Any = node.rexpr
        escape_node: Any = None
        if isinstance(pattern_node, ast.FuncCall) and column_names(pattern_node.funcname) == (
            "pg_catalog",
            "like_escape",
        ):
            pattern_node, escape_node = pattern_node.args or ()
        value = self.compile(node.lexpr)
        pattern = self.compile(pattern_node)
        escape = self.compile(escape_node) if escape_node is not None else None
        args = [value, pattern] + ([escape] if escape is not None else [])
        arg_nodes = [node.lexpr, pattern_node] + ([escape_node] if escape_node else [])
        overloads = [Overload((t.TEXT,) * len(args), t.BOOL, _like_fn(insensitive, negate))]

        def describe() -> str:
            return f"operator {t.sql_name(value.type)} {name} {t.sql_name(pattern.type)}"

        fn, _, bound = self.bind(overloads, args, arg_nodes, describe, node, binary_op=True)
        return self.call(fn, bound, t.BOOL, node)

    def distinct(self, node: Any, negate: bool) -> Compiled:
        left, right = self.compile(node.lexpr), self.compile(node.rexpr)
        eq, bound = self.comparison("=", left, right, [node.lexpr, node.rexpr], node)
        fa, fb = bound[0].fn, bound[1].fn

        def is_distinct(ctx: Any) -> bool:
            a, b = fa(ctx), fb(ctx)
            if a is None or b is None:
                return (a is None) != (b is None)
            return not eq(a, b)

        if negate:
            return Compiled(lambda ctx: not is_distinct(ctx), t.BOOL)
        return Compiled(is_distinct, t.BOOL)

    def nullif(self, node: Any) -> Compiled:
        left, right = self.compile(node.lexpr), self.compile(node.rexpr)
        eq, bound = self.comparison("=", left, right, [node.lexpr, node.rexpr], node)
        fa, fb = bound[0].fn, bound[1].fn
        # The result has the type of the first argument as the operator takes it.
        overload = resolve.select(
            functions.OPERATORS[("=", 2)], [bound[0].type, bound[1].type], True
        )
        result_type = overload[0].args[0]
        convert = self.converter(bound[0].type, result_type, node.lexpr)

        def nullif(ctx: Any) -> Any:
            a, b = fa(ctx), fb(ctx)
            if a is not None and b is not None and eq(a, b):
                return None
            return convert(a) if convert is not None and a is not None else a

        return Compiled(nullif, result_type)

    def in_list(self, node: Any, negate: bool) -> Compiled:
        left = self.compile(node.lexpr)
        items = []
        for item_node in node.rexpr:
            eq, bound = self.comparison(
                "=", left, self.compile(item_node), [node.lexpr, item_node], node
            )
            items.append((eq, bound[0].fn, bound[1].fn))
        shared = left.type != t.UNKNOWN
        fx = left.fn

        def contains(ctx: Any) -> bool | None:
            x = fx(ctx) if shared else None
            null = False
            for eq, fa, fb in items:
                a = x if shared else fa(ctx)
                b = fb(ctx)
                if a is None or b is None:
                    null = True
                elif eq(a, b):
                    return True
            return None if null else False

        if negate:
            return Compiled(_negate(contains), t.BOOL)
        return Compiled(contains, t.BOOL)

    def between(self, node: Any, kind: Any) -> Compiled:
        K = enums.A_Expr_Kind
        low_node, high_node = node.rexpr
        value = self.compile(node.lexpr)
        low, high = self.compile(low_node), self.compile(high_node)
        nodes_low, nodes_high = [node.lexpr, low_node], [node.lexpr, high_node]
        ge, b1 = self.comparison(">=", value, low, nodes_low, node)
        le, b2 = self.comparison("<=", value, high, nodes_high, node)
        fx1, flo, fx2, fhi = b1[0].fn, b1[1].fn, b2[0].fn, b2[1].fn
        symmetric = kind in (K.AEXPR_BETWEEN_SYM, K.AEXPR_NOT_BETWEEN_SYM)
        if symmetric:
            ge2, b3 = self.comparison(">=", value, high, nodes_high, node)
            le2, b4 = self.comparison("<=", value, low, nodes_low, node)
            fx3, fhi2, fx4, flo2 = b3[0].fn, b3[1].fn, b4[0].fn, b4[1].fn

        def between(ctx: Any) -> bool | None:
            forward = _and3(_cmp3(ge, fx1(ctx), flo(ctx)), _cmp3(le, fx2(ctx), fhi(ctx)))
            if not symmetric or forward is True:
                return forward
            backward = _and3(_cmp3(ge2, fx3(ctx), fhi2(ctx)), _cmp3(le2, fx4(ctx), flo2(ctx)))
            return _or3(forward, backward)

        if kind in (K.AEXPR_NOT_BETWEEN, K.AEXPR_NOT_BETWEEN_SYM):
            return Compiled(_negate(between), t.BOOL)
        return Compiled(between, t.BOOL)

    def _BoolExpr(self, node: Any) -> Compiled:
        op = node.boolop
        if op == enums.BoolExprType.NOT_EXPR:
            return Compiled(_negate(self.boolean(node.args[0], "NOT").fn), t.BOOL)
        word = "AND" if op == enums.BoolExprType.AND_EXPR else "OR"
        fns = [self.boolean(arg, word).fn for arg in node.args]
        stop = word == "OR"  # the value that decides: True for OR, False for AND

        def logic(ctx: Any) -> bool | None:
            null = False
            for fn in fns:
                value = fn(ctx)
                if value is None:
                    null = True
                elif value is stop:
                    return stop
            return None if null else not stop

        return Compiled(logic, t.BOOL)

    def _NullTest(self, node: Any) -> Compiled:
        fn = self.compile(node.arg).fn
        if node.nulltesttype == enums.NullTestType.IS_NULL:
            return Compiled(lambda ctx: fn(ctx) is None, t.BOOL)
        return Compiled(lambda ctx: fn(ctx) is not None, t.BOOL)

    def _BooleanTest(self, node: Any) -> Compiled:
        B = enums.BoolTestType
        test = node.booltesttype
        construct = {
            B.IS_TRUE: "IS TRUE",
            B.IS_NOT_TRUE: "IS NOT TRUE",
            B.IS_FALSE: "IS FALSE",
            B.IS_NOT_FALSE: "IS NOT FALSE",
            B.IS_UNKNOWN: "IS UNKNOWN",
            B.IS_NOT_UNKNOWN: "IS NOT UNKNOWN",
        }[test]
        fn = self.boolean(node.arg, construct).fn
        wanted = {
            B.IS_TRUE: True,
            B.IS_NOT_TRUE: True,
            B.IS_FALSE: False,
            B.IS_NOT_FALSE: False,
            B.IS_UNKNOWN: None,
            B.IS_NOT_UNKNOWN: None,
        }[test]
        if test in (B.IS_TRUE, B.IS_FALSE, B.IS_UNKNOWN):
            return Compiled(lambda ctx: fn(ctx) is wanted, t.BOOL)
        return Compiled(lambda ctx: fn(ctx) is not wanted, t.BOOL)

    def _CaseExpr(self, node: Any) -> Compiled:
        conditions: list[Callable[[Any], Any]] = []
        if node.arg is not None:
            subject = self.compile(node.arg)
            for when in node.args:
                eq, bound = self.comparison(
                    "=", subject, self.compile(when.expr), [node.arg, when.expr], when
                )
                conditions.append(_call(eq, [bound[0].fn, bound[1].fn]))
        else:
            conditions = [self.boolean(when.expr, "CASE/WHEN").fn for when in node.args]
        result_nodes = [when.result for when in node.args]
        if node.defresult is not None:
            result_nodes.append(node.defresult)
        results = [self.compile(n) for n in result_nodes]
        common = self.common_type(results, result_nodes, "CASE")
        fns = [self.coerce(r, common, n).fn for r, n in zip(results, result_nodes, strict=True)]
        default = fns.pop() if node.defresult is not None else _none
        branches = list(zip(conditions, fns, strict=True))

        def case(ctx: Any) -> Any:
            for condition, result in branches:
                if condition(ctx) is True:
                    return result(ctx)
            return default(ctx)

        return Compiled(case, common)

    def uniform(self, nodes: Sequence[Any], context: str) -> tuple[list[Callable[[Any], Any]], str]:
        items = [self.compile(n) for n in nodes]
        common = self.common_type(items, nodes, context)
        return [self.coerce(i, common, n).fn for i, n in zip(items, nodes, strict=True)], common

    def _CoalesceExpr(self, node: Any) -> Compiled:
        fns, common = self.uniform(node.args, "COALESCE")

        def coalesce(ctx: Any) -> Any:
            for fn in fns:
                value = fn(ctx)
                if value is not None:
                    return value
            return None

        return Compiled(coalesce, common)

    def _MinMaxExpr(self, node: Any) -> Compiled:
        greatest = node.op == enums.MinMaxOp.IS_GREATEST
        name = "GREATEST" if greatest else "LEAST"
        fns, common = self.uniform(node.args, name)
        try:
            key = t.sort_key(common)
        except SqlError as exc:
            raise SqlError(exc.message, self.pos(node)) from None
        pick = max if greatest else min

        def extreme(ctx: Any) -> Any:
            values = [v for v in (fn(ctx) for fn in fns) if v is not None]
            return pick(values, key=key) if values else None

        return Compiled(extreme, common)

    def _TypeCast(self, node: Any) -> Compiled:
        target, typmods = self.type_name(node.typeName)
        arg = self.compile(node.arg)
        if arg.type == t.UNKNOWN:
            compiled = self.literal(arg, target, node.arg)
        else:
            convert = casts.cast_function(arg.type, target)
            if convert is None:
                raise SqlError(
                    f"cannot cast type {t.sql_name(arg.type)} to {t.sql_name(target)}",
                    self.pos(node),
                )
            compiled = arg
            if arg.type != target:
                compiled = self.call(_strict(convert, [None]), [arg], target, node)
        modifier = self.type_modifier(target, typmods, node)
        if modifier is None:
            return compiled
        return self.call(_strict(modifier, [None]), [compiled], target, node)

    def type_name(self, node: Any) -> tuple[str, list[int]]:
        names = [n.sval for n in node.names]
        if len(names) > 1 and names[0] != "pg_catalog":
            raise SqlError(f'type "{".".join(names)}" is not supported', self.pos(node))
        name = names[-1].lower()
        if (name in ("bpchar", "char", "character") and len(names) > 1) or name == "bpchar":
            raise SqlError(
                "type character(n) is not supported; use text or varchar", self.pos(node)
            )
        base = t.TYPE_ALIASES.get(name)
        if base is None or node.setof or node.pct_type:
            raise SqlError(f'type "{name}" is not supported', self.pos(node))
        typmods: list[int] = []
        for mod in node.typmods or ():
            if not (isinstance(mod, ast.A_Const) and isinstance(mod.val, ast.Integer)):
                raise SqlError("type modifiers must be integer constants", self.pos(node))
            typmods.append(int(mod.val.ival or 0))
        if node.arrayBounds:
            if typmods:
                raise SqlError("type modifiers on arrays are not supported", self.pos(node))
            return base + "[]", []
        return base, typmods

    def type_modifier(
        self, target: str, typmods: list[int], node: Any
    ) -> Callable[[Any], Any] | None:
        if not typmods:
            return None
        if target == t.NUMERIC and len(typmods) <= 2:
            precision, scale = typmods[0], typmods[1] if len(typmods) > 1 else 0
            if not 1 <= precision <= 1000 or not -1000 <= scale <= 1000:
                raise SqlError(
                    f"NUMERIC precision {precision} must be between 1 and 1000", self.pos(node)
                )
            return _numeric_typmod(precision, scale)
        if target == t.TEXT and len(typmods) == 1:
            length = typmods[0]
            if length < 1:
                raise SqlError("length for type varchar must be at least 1", self.pos(node))
            return lambda text: text[:length]
        if target in (t.TIMESTAMP, t.TIMESTAMPTZ, t.TIME) and len(typmods) == 1:
            precision = typmods[0]
            if precision < 0:
                raise SqlError(
                    f"precision of {t.sql_name(target)} cannot be negative", self.pos(node)
                )
            return _round_time(min(precision, 6))
        raise SqlError(f"type modifiers of {t.sql_name(target)} are not supported", self.pos(node))

    def _FuncCall(self, node: Any) -> Compiled:
        names = [n.sval for n in node.funcname]
        name = names[-1].lower()
        pos = self.pos(node)
        if len(names) > 1 and names[0] != "pg_catalog":
            raise SqlError(f"function {'.'.join(names)}() does not exist", pos)
        if node.over is not None:
            raise SqlError(f"window functions are not supported ({name}() OVER ...)", pos)
        if name in functions.AGGREGATES or node.agg_star:
            raise SqlError(f"aggregate function {name}() is not allowed here", pos)
        if node.agg_distinct or node.agg_order or node.agg_filter or node.agg_within_group:
            raise SqlError(
                f"{name}() is not an aggregate function: DISTINCT, ORDER BY, FILTER "
                "and WITHIN GROUP are not allowed",
                pos,
            )
        if node.func_variadic:
            raise SqlError("VARIADIC arguments are not supported", pos)
        arg_nodes = list(node.args or ())
        if name in functions.NONDETERMINISTIC:
            return self.volatile(name, arg_nodes, node)
        if name in ("concat", "concat_ws"):
            return self.concat(name, arg_nodes, node)
        if name == "timezone" and node.funcformat == enums.CoercionForm.COERCE_SQL_SYNTAX:
            raise SqlError("AT TIME ZONE is not supported", pos)
        overloads = functions.FUNCTIONS.get(name)
        args = [self.compile(a) for a in arg_nodes]
        if overloads is None:
            raise SqlError(
                f"function {name}({_type_list([a.type for a in args])}) does not exist or is "
                "not supported",
                pos,
            )

        def describe() -> str:
            return f"function {name}({_type_list([a.type for a in args])})"

        fn, result, bound = self.bind(overloads, args, arg_nodes, describe, node)
        if name in ("extract", "date_part", "date_trunc") and isinstance(arg_nodes[0], ast.A_Const):
            self.check_unit(name, bound, arg_nodes)
        return self.call(fn, bound, result, node)

    def check_unit(self, name: str, bound: list[Compiled], arg_nodes: list[Any]) -> None:
        """A constant unit is checked at compile time (PostgreSQL folds it when planning)."""
        field = bound[0].fn(None)
        if field is None:
            return
        chosen = resolve.select(functions.FUNCTIONS[name], [t.TEXT, bound[1].type], False)
        try:
            functions.check_unit(name, field, chosen[0].args[1])
        except EvalError as exc:
            raise SqlError(str(exc), self.pos(arg_nodes[0])) from None

    def volatile(self, name: str, arg_nodes: list[Any], node: Any) -> Compiled:
        if self.deterministic:
            raise SqlError(f"{name}() is not deterministic; views cannot use it", self.pos(node))
        entry = functions.VOLATILE.get(name)
        if entry is None or arg_nodes:
            raise SqlError(f"function {name}() is not supported", self.pos(node))
        type, clock = entry
        return Compiled(lambda ctx: clock(), type)

    def _SQLValueFunction(self, node: Any) -> Compiled:
        name = node.op.name.removeprefix("SVFOP_").lower()
        for suffix in ("_n",):
            name = name.removesuffix(suffix)
        if getattr(node, "typmod", -1) not in (-1, None):
            raise SqlError(f"{name}(precision) is not supported", self.pos(node))
        return self.volatile(name, [], node)

    def concat(self, name: str, arg_nodes: list[Any], node: Any) -> Compiled:
        args = [self.compile(a) for a in arg_nodes]
        if name == "concat_ws" and not args:
            raise SqlError("function concat_ws() does not exist", self.pos(node))
        pairs = [(a.fn, casts.output_function(a.type)) for a in args]
        if name == "concat":

            def concat(ctx: Any) -> str:
                return "".join(out(v) for fn, out in pairs if (v := fn(ctx)) is not None)

            return Compiled(concat, t.TEXT)
        separator = self.coerce(args[0], t.TEXT, arg_nodes[0]).fn
        rest = pairs[1:]

        def concat_ws(ctx: Any) -> str | None:
            sep = separator(ctx)
            if sep is None:
                return None
            return sep.join(out(v) for fn, out in rest if (v := fn(ctx)) is not None)

        return Compiled(concat_ws, t.TEXT)


# --- closures --------------------------------------------------------------------------------


def _strict(
    impl: Callable[..., Any], converters: list[Callable[[Any], Any] | None]
) -> Callable[..., Any]:
    """``impl`` on converted values, NULL when any value is NULL (a strict function)."""
    if len(converters) == 1:
        (c,) = converters
        if c is None:
            return lambda a: None if a is None else impl(a)
        return lambda a: None if a is None else impl(c(a))
    if len(converters) == 2:
        ca, cb = converters
        if ca is None and cb is None:
            return lambda a, b: None if a is None or b is None else impl(a, b)

        def binary(a: Any, b: Any) -> Any:
            if a is None or b is None:
                return None
            return impl(a if ca is None else ca(a), b if cb is None else cb(b))

        return binary

    def nary(*values: Any) -> Any:
        if any(v is None for v in values):
            return None
        return impl(*(v if c is None else c(v) for v, c in zip(values, converters, strict=True)))

    return nary


def _call(fn: Callable[..., Any], args: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if len(args) == 1:
        (fa,) = args
        return lambda ctx: fn(fa(ctx))
    if len(args) == 2:
        fa, fb = args
        return lambda ctx: fn(fa(ctx), fb(ctx))
    return lambda ctx: fn(*(f(ctx) for f in args))


def _negate(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def negated(ctx: Any) -> bool | None:
        value = fn(ctx)
        return None if value is None else not value

    return negated


def _cmp3(op: Callable[[Any, Any], Any], a: Any, b: Any) -> bool | None:
    return None if a is None or b is None else op(a, b)


def _and3(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or3(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _like_fn(insensitive: bool, negate: bool) -> Callable[..., bool]:
    def like(text: str, pattern: str, escape: str = "\\") -> bool:
        pattern = functions.like_escape(pattern, escape)
        if insensitive:
            text, pattern = functions.pg_lower(text), functions.pg_lower(pattern)
        return functions.like(text, pattern) != negate

    return like


def _numeric_typmod(precision: int, scale: int) -> Callable[[Decimal], Decimal]:
    limit = Decimal(10) ** (precision - scale)

    def apply(value: Decimal) -> Decimal:
        if value.is_nan():
            return value
        if value.is_infinite():
            raise EvalError("numeric field overflow")
        rounded = t.round_numeric(value, scale)
        if abs(rounded) >= limit:
            raise EvalError(
                f"numeric field overflow: a field with precision {precision}, scale {scale} "
                f"must round to an absolute value less than 10^{precision - scale}"
            )
        return rounded

    return apply


def _round_time(precision: int) -> Callable[[Any], Any]:
    step = 10 ** (6 - precision)

    def apply(value: Any) -> Any:
        micro = value.microsecond
        rounded = (micro + step // 2) // step * step
        if isinstance(value, time):
            delta = casts.time_to_interval(value) + timedelta(microseconds=rounded - micro)
            if delta >= timedelta(days=1):
                raise EvalError("time 24:00:00 is not supported")
            return (datetime.min + delta).time()
        return value + timedelta(microseconds=rounded - micro)

    return apply

"""A product's spec, validated against the view it exposes.

:func:`build_product` checks everything serve will rely on before anything is written, and
raises a 422 naming the first problem: the view exists; every field is a column of it and is
listed once; a mask names an exposed field that is not a key column; every row filter compiles
as a boolean over the exposed fields (with the problem's position in the filter).

Decisions:

- The view's key columns are always exposed (serve addresses a row by its key, in
  ``rows/{key}``, cursors and change streams); the ones missing from ``fields`` are added in
  front. For the same reason a key column cannot be masked. A view's key may also have parts
  that are not columns of its rows (``_key<n>``, see :mod:`freshet.common.sql.views`): they
  are in the record key of the view's topic only, and the product's ``key`` names them too.
- A row filter uses the expression language of :mod:`freshet.common.sql.expr` over the exposed
  fields, typed as the view's columns, and must be deterministic (no ``now()``, ``random()``):
  whether a role sees a row then depends on the row alone, so it changes only when the row does
  and a change stream can tell a reader when a row enters or leaves what it may see.
- A product published as a topic (``publish_topic``) names ``topic_role``, one of its roles:
  a topic reader presents no API key, so the topic carries the rows and masks of that role. A
  ``topic_role`` is checked whenever it is given, so it never names a role that does not exist.
- ``hash`` masks use one random salt per product (HMAC key of the hash), made the first time a
  hash mask is defined and kept by every later generation, so a hashed value stays the same
  across replacements. It is stored only encrypted (:mod:`freshet.common.secrets`).
- A product keeps the key and the fields, with their types, it was defined with: a view cannot
  be redefined under it in a way that changes them (:func:`conflicts`, a 409 on the view's
  ``PUT``), since readers' paths, cursors, filters, masks and generated schemas rest on them. It
  follows the view's ``indexes`` (:func:`refit`), so what it offers to sort on is what serve
  can sort the view's rows on. A view that products expose cannot be deleted (409) until they
  are.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from pydantic import SecretStr

from freshet.common.products import ProductRole, ProductScope, ProductSpec, compile_row_filter
from freshet.common.schemas import ViewSpec
from freshet.common.secrets import SecretBox
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import Compiled
from freshet.control.access_models import RoleIn
from freshet.control.exceptions import InvalidSpecError, InvalidSqlError

SALT_BYTES = 32


class _ProductScope(ProductScope):
    """The exposed fields of a product; names the view's columns that are not exposed."""

    def __init__(self, exposed: Sequence[str], view: ViewSpec) -> None:
        columns = {c.name: c.type for c in view.columns}
        super().__init__({name: columns[name] for name in exposed})
        self._view = view

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        if len(fields) == 1 and fields[0] not in self.types:
            name = fields[0]
            if any(c.name == name for c in self._view.columns):
                known = ", ".join(self.types)
                raise SqlError(
                    f'field "{name}" is a column of the view that the product does not expose: '
                    f"add it to fields, or use one of {known}",
                    location,
                )
        return super().column(fields, location)


def check_row_filter(text: str, exposed: Sequence[str], view: ViewSpec) -> Compiled:
    """Compile a role's row filter over the exposed fields of a product of ``view``.

    The same compilation serve runs (:func:`freshet.common.products.compile_row_filter`), so a
    filter control accepts is one serve evaluates.

    Raises:
        SqlError: the filter does not parse, names a field that is not exposed, is not a
            boolean, or uses a non-deterministic function; with the position in ``text``.
    """
    return compile_row_filter(text, _ProductScope(exposed, view))


def _exposed_fields(view: ViewSpec, fields: Sequence[str] | None) -> list[str]:
    """The fields a product exposes: ``fields`` (default: every column), key columns in front.

    Only the key columns that are columns of the view's rows: a key part the view does not
    output (``_key<n>``, e.g. the primary key of a joined table) is in the view topic's record
    key only, so it is no field.

    Raises:
        InvalidSpecError: a field is not a column of the view, or is listed twice.
    """
    columns = [c.name for c in view.columns]
    if fields is None:
        requested = columns
    else:
        requested = []
        for name in fields:
            if name not in columns:
                raise InvalidSpecError(
                    ("body", "fields"),
                    f"view {view.name!r} has no column {name!r} (it has: {', '.join(columns)})",
                )
            if name in requested:
                raise InvalidSpecError(("body", "fields"), f"field {name!r} is listed twice")
            requested.append(name)
    return [k for k in view.key if k in columns and k not in requested] + requested


def _role(name: str, role: RoleIn, exposed: Sequence[str], view: ViewSpec) -> ProductRole:
    """The spec of one role, checked.

    Raises:
        InvalidSpecError: a mask names a field that is not exposed, or a key column.
        InvalidSqlError: the row filter does not compile as a boolean over the exposed fields.
    """
    loc = ("body", "roles", name)
    for field in role.masks:
        where = (*loc, "masks", field)
        if field not in exposed:
            raise InvalidSpecError(
                where,
                f"field {field!r} is not exposed by the product (it exposes: {', '.join(exposed)})",
            )
        if field in view.key:
            raise InvalidSpecError(
                where,
                f"field {field!r} is a key column of view {view.name!r}: key columns cannot be "
                "masked, serve addresses rows by them",
            )
    if role.row_filter is not None:
        try:
            check_row_filter(role.row_filter, exposed, view)
        except SqlError as exc:
            raise InvalidSqlError(
                (*loc, "row_filter"), exc.message, role.row_filter, exc.position
            ) from None
    return ProductRole(row_filter=role.row_filter, masks=role.masks)


def _check_topic_role(
    publish_topic: bool, topic_role: str | None, roles: Mapping[str, ProductRole]
) -> None:
    """Raises InvalidSpecError: a published product without ``topic_role``, or one not in roles."""
    loc = ("body", "topic_role")
    known = ", ".join(roles)
    if topic_role is None:
        if publish_topic:
            raise InvalidSpecError(
                loc,
                "publish_topic needs topic_role: the role whose row filter and masks apply to "
                f"the product's topic, whose readers present no API key (one of: {known})",
            )
        return
    if topic_role not in roles:
        raise InvalidSpecError(
            loc, f"role {topic_role!r} is not a role of the product (it has: {known})"
        )


def new_salt(box: SecretBox) -> str:
    """A random salt for ``hash`` masks, encrypted for the desired-state topic."""
    return box.encrypt(SecretStr(secrets.token_urlsafe(SALT_BYTES)))


def build_product(
    name: str,
    view: ViewSpec | None,
    view_name: str,
    fields: Sequence[str] | None,
    roles: Mapping[str, RoleIn],
    publish_topic: bool,
    *,
    topic_role: str | None = None,
    box: SecretBox,
    salt_encrypted: str = "",
    generation: int = 1,
) -> ProductSpec:
    """The spec of product ``name`` over ``view`` (``None``: the view ``view_name`` is missing).

    ``salt_encrypted`` is the salt of the product's previous generation, kept if set; otherwise
    a new one is made when a role has a ``hash`` mask.

    Raises:
        InvalidSpecError: see the module's docstring; the first problem found, in the order of
            the body (view, fields, then each role).
    """
    if view is None:
        raise InvalidSpecError(
            ("body", "view"),
            f"view {view_name!r} does not exist: create it with POST /v1/views first (GET "
            "/v1/views lists them)",
        )
    exposed = _exposed_fields(view, fields)
    by_name = {c.name: c for c in view.columns}
    specs = {role: _role(role, spec, exposed, view) for role, spec in roles.items()}
    _check_topic_role(publish_topic, topic_role, specs)
    hashes = any(rule.method == "hash" for r in specs.values() for rule in r.masks.values())
    if hashes and not salt_encrypted:
        salt_encrypted = new_salt(box)
    return ProductSpec(
        name=name,
        view=view.name,
        fields=tuple(exposed),
        key=view.key,
        columns=tuple(by_name[f] for f in exposed),
        indexes=tuple(f for f in view.indexes if f in exposed),
        roles=specs,
        publish_topic=publish_topic,
        topic_role=topic_role,
        hash_salt_encrypted=salt_encrypted,
        generation=generation,
    )


def conflicts(product: ProductSpec, current: ViewSpec, new: ViewSpec) -> list[str]:
    """What of ``product`` its view, redefined from ``current`` to ``new``, would break.

    A product keeps the key it addresses rows by (its names and types, also of key parts that
    are not fields) and the fields it exposes with their types: readers' paths, cursors, row
    filters, masks and generated schemas rest on them. A view can be redefined under a product
    only if those stay as they are. Empty: nothing breaks.
    """
    problems: list[str] = []
    before, after = _typed_key(current), _typed_key(new)
    if key_changes(product, current, new):
        problems.append(
            f"product {product.name!r} addresses rows by the view's key "
            f"({_key_text(before) if before else ', '.join(product.key)}); the new SQL's key is "
            f"({_key_text(after) if after else ', '.join(new.key)})"
        )
    types = {c.name: c.type for c in new.columns}
    for column in product.columns:
        retyped = types.get(column.name)
        if retyped is None:
            problems.append(
                f"product {product.name!r} exposes field {column.name!r}, which the new SQL "
                "does not output"
            )
        elif retyped != column.type:
            problems.append(
                f"product {product.name!r} exposes field {column.name!r} as {column.type}; the "
                f"new SQL makes it {retyped}"
            )
    return problems


def key_changes(product: ProductSpec, current: ViewSpec, new: ViewSpec) -> bool:
    """Whether redefining ``product``'s view from ``current`` to ``new`` changes its key.

    Its names, or their types (known for views compiled since ``key_columns`` exists).
    """
    before, after = _typed_key(current), _typed_key(new)
    return product.key != new.key or bool(before and after and before != after)


def _typed_key(view: ViewSpec) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in view.key_columns]


def _key_text(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {type_}" for name, type_ in columns)


def refit(product: ProductSpec, view: ViewSpec) -> ProductSpec:
    """``product`` over its view redefined as ``view`` (which has no :func:`conflicts` with it).

    Its ``indexes`` become the view's new ones it exposes, in a new generation (serve rebuilds
    the product's schemas); the product itself is returned when they did not change, or when
    it is not over ``view``.
    """
    indexes = tuple(f for f in view.indexes if f in product.fields)
    if product.view != view.name or indexes == product.indexes:
        return product
    return product.model_copy(update={"indexes": indexes, "generation": product.generation + 1})

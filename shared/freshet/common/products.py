"""Desired state of data products and API keys (``freshet.control.products`` / ``.keys``).

A product exposes some fields of one view. Per access role it may narrow the rows (a SQL
expression over the product's fields, in the safe expression language) and mask fields (the
pipelines' mask rules). An API key names the roles it holds and the products it may read; its
secret is shown once when created and only its SHA-256 hash is stored.

Which rule applies to a request: the key must list the product (or ``"*"``), and the first of
the key's roles that the product defines gives the row filter and the masks. A key none of whose
roles the product defines may not read it.

A product may also be published as its own compacted Kafka topic (``publish_topic``, named by
:func:`freshet.common.topics.product_topic`). A topic reader presents no API key, so no role can
be chosen at read time: the product names the role whose row filter and masks apply to the topic
(``topic_role``, one of its roles). The topic carries the product's fields only, as that role
sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from freshet.common.pipelines.spec import MaskRule
from freshet.common.schemas import Name, OutputColumn
from freshet.common.sql import casts
from freshet.common.sql import types as t
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import Compiled, EvalError, compile_expr, parse_expression

API_KEY_PREFIX = "fsk"
"""API keys read ``fsk_<id>_<secret>``: the id finds the key, the secret is checked by hash."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProductRole(_Frozen):
    row_filter: str | None = Field(
        default=None, description="A SQL boolean expression over the product's fields."
    )
    masks: dict[str, MaskRule] = Field(default_factory=dict, description="Field -> mask.")


class ProductSpec(_Frozen):
    """A data product as control writes it (key = product name).

    ``key``, ``columns`` and ``indexes`` are copied from the view when the product is defined
    (``columns`` are the exposed fields with their types). Control refuses to redefine the view
    in a way that changes the key or an exposed field's type, and copies its new ``indexes``
    (see :mod:`freshet.control.products`); ``hash_salt_encrypted`` is the
    Fernet-encrypted salt of ``hash`` masks (see :mod:`freshet.common.secrets`), never returned
    by an API.
    """

    name: Name
    view: Name
    fields: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[OutputColumn, ...]
    roles: dict[str, ProductRole]
    indexes: tuple[str, ...] = Field(
        default=(),
        description="The exposed fields the view indexes, copied from the view when the product "
        "is defined and when the view is redefined: rows can be sorted on them (and on the first "
        "key column).",
    )
    publish_topic: bool = False
    topic_role: str | None = Field(
        default=None,
        description="The role whose row filter and masks apply to the product's topic; set "
        "(to one of ``roles``) when ``publish_topic`` is.",
    )
    hash_salt_encrypted: str = ""
    generation: int = 1


class ApiKeySpec(_Frozen):
    """An API key as control writes it (key = the key's id). The secret itself is never stored."""

    id: str = Field(pattern=r"^[a-z0-9]{8,32}$")
    name: str = Field(max_length=200)
    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: tuple[str, ...]
    products: tuple[str, ...] = Field(description='Product names it may read, or "*".')
    created_at_ms: int = Field(default_factory=lambda: int(time.time() * 1000))
    expires_at_ms: int | None = None


# --- access rules over view rows -----------------------------------------------------------


class ProductScope:
    """The fields of a product's rows, for its row filters.

    A row is a ``dict`` of field name -> Python value, as
    :func:`freshet.common.sql.types.decoder` gives them (``Decimal``, ``date``, ``datetime`` in
    UTC, ``timedelta``...). Control compiles filters against this scope to check them, and serve
    to evaluate them, so a filter control accepts is one serve can run.
    """

    def __init__(self, types: Mapping[str, str]) -> None:
        self.types = dict(types)

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        if len(fields) != 1:
            raise SqlError(
                f'column reference "{".".join(fields)}" is not supported: name a field of the '
                "product without a qualifier",
                location,
            )
        name = fields[0]
        type_ = self.types.get(name)
        if type_ is None:
            known = ", ".join(self.types) or "none"
            raise SqlError(
                f'field "{name}" does not exist (the product exposes: {known})', location
            )
        return Compiled(operator.itemgetter(name), type_)

    def special(self, node: Any) -> Compiled | None:
        return None


_NOT_DETERMINISTIC = "; views cannot use it"
"""The end of the expression compiler's message for a non-deterministic function."""


def compile_row_filter(text: str, scope: ProductScope) -> Compiled:
    """Compile a role's row filter: a deterministic boolean over the product's fields.

    Deterministic because whether a role sees a row must depend on the row alone: it then
    changes only when the row does, so a change stream can tell a reader when a row enters or
    leaves what it may see. An untyped literal (``'t'``, ``NULL``) reads as a boolean, as in
    PostgreSQL's WHERE.

    Raises:
        SqlError: the filter does not parse, names an unknown field, is not a boolean, or uses
            a non-deterministic function; with the position in ``text``.
    """
    try:
        parsed, offset = parse_expression(text)
        compiled = compile_expr(parsed, scope, offset, deterministic=True)
    except SqlError as exc:
        if exc.message.endswith(_NOT_DETERMINISTIC):
            raise SqlError(
                exc.message.removesuffix(_NOT_DETERMINISTIC) + "; a row filter cannot use it "
                "(whether a role sees a row must depend on the row alone)",
                exc.position,
            ) from None
        raise
    if compiled.type == t.UNKNOWN:
        return _as_boolean(compiled)
    if compiled.type != t.BOOL:
        raise SqlError(f"a row filter must be of type boolean, not {t.sql_name(compiled.type)}", 0)
    return compiled


def _as_boolean(compiled: Compiled) -> Compiled:
    text = compiled.fn(None)
    if text is None:
        return Compiled(compiled.fn, t.BOOL)
    parse = casts.input_function(t.BOOL)
    if parse is None:  # pragma: no cover - boolean input always exists
        raise SqlError("boolean literals are not supported", 0)
    try:
        value = parse(text)
    except EvalError as exc:
        raise SqlError(str(exc), 0) from None
    return Compiled(lambda _row: value, t.BOOL)


Masker = Callable[[Any], str | None]
"""A field's Python value (never None) -> what a role sees instead."""


def masker(rule: MaskRule, type_: str, salt: bytes | None) -> Masker:
    """The function that masks one field's values, as pipelines' mask node does.

    ``hash`` is the hex HMAC-SHA256 of the value's PostgreSQL text under ``salt``; ``keep_last``
    keeps the last ``rule.keep`` characters of that text and replaces the others with
    ``rule.mask_char``; ``redact`` is ``rule.replacement``; ``null`` is NULL. NULL stays NULL
    (callers do not call a masker for it). Every masked value is text (or NULL), whatever the
    field's type.

    Raises:
        ValueError: a ``hash`` rule without a salt.
    """
    if rule.method == "null":
        return lambda _value: None
    if rule.method == "redact":
        replacement = rule.replacement
        return lambda _value: replacement
    out = casts.output_function(type_)
    if rule.method == "hash":
        if not salt:
            raise ValueError("a hash mask needs the product's salt")
        key = salt

        def hashed(value: Any) -> str:
            return hmac.new(key, out(value).encode(), hashlib.sha256).hexdigest()

        return hashed
    keep, char = rule.keep, rule.mask_char

    def keep_last(value: Any) -> str:
        text = out(value)
        kept = text[-keep:] if keep else ""
        return char * (len(text) - len(kept)) + kept

    return keep_last

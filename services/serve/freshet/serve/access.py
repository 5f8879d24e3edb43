"""Who may read what: API keys, and what a key's role sees of a product.

A request names its key as ``Authorization: Bearer fsk_<id>_<secret>`` or
``X-API-Key: fsk_<id>_<secret>``. The id finds the key on ``freshet.control.keys``; the secret's
SHA-256 is compared in constant time with the stored hash. A missing, malformed, unknown,
expired or wrong key is 401, with the same message whichever it was.

A key may read a product when it lists it (or ``"*"``) and holds a role the product defines;
the first such role, in the key's order, applies (see :mod:`freshet.common.products`). The key
may not read it otherwise: 403, also when the product does not exist, so that a key learns
nothing of products it may not read. The role gives a :class:`Grant`: the row filter (a
compiled boolean over the product's fields; a row for which it is not true is invisible) and
the masks. A masked field can be neither filtered nor sorted on, so its values cannot be probed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from freshet.common.exceptions import ConfigError
from freshet.common.products import (
    API_KEY_PREFIX,
    ApiKeySpec,
    Masker,
    ProductScope,
    ProductSpec,
    compile_row_filter,
    masker,
)
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import EvalError
from freshet.common.sql.types import is_ordered
from freshet.serve.catalog import Catalog
from freshet.serve.exceptions import Forbidden, Unauthorized, Unavailable
from freshet.serve.materialize.values import decoder

log = logging.getLogger(__name__)

ANY_PRODUCT = "*"


def parse_api_key(text: str) -> tuple[str, str] | None:
    """``fsk_<id>_<secret>`` -> (id, secret); None when it is not of that form."""
    prefix, sep, rest = text.partition("_")
    key_id, sep2, secret = rest.partition("_")
    if prefix != API_KEY_PREFIX or not sep or not sep2 or not key_id or not secret:
        return None
    return key_id, secret


def authenticate(catalog: Catalog, presented: str | None) -> ApiKeySpec:
    """The key whose secret ``presented`` is.

    Raises:
        Unauthorized: no key, or not a valid one (never says which).
    """
    if not presented:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
    parsed = parse_api_key(presented.strip())
    spec = catalog.key(parsed[0]) if parsed is not None else None
    digest = hashlib.sha256((parsed[1] if parsed else presented).encode()).hexdigest()
    if spec is None or parsed is None:
        raise Unauthorized("the API key is not valid")
    if not hmac.compare_digest(digest, spec.secret_sha256):
        raise Unauthorized("the API key is not valid")
    if spec.expires_at_ms is not None and spec.expires_at_ms <= time.time() * 1000:
        raise Unauthorized("the API key is not valid")
    return spec


def may_read(key: ApiKeySpec, product: ProductSpec) -> str | None:
    """The role under which ``key`` reads ``product``, None if it may not."""
    if ANY_PRODUCT not in key.products and product.name not in key.products:
        return None
    return next((role for role in key.roles if role in product.roles), None)


@dataclass(frozen=True)
class Grant:
    """What one role sees of one product generation.

    ``fields`` are the product's fields in order, with their ``types``; ``masked`` the fields
    the role sees masked. :meth:`present` turns a view row (its JSON as serve stores it) into
    what the role sees, or None when the row filter hides it.
    """

    product: ProductSpec
    role: str
    fields: tuple[str, ...]
    types: dict[str, str]
    masked: frozenset[str]
    _filter: Callable[[dict[str, Any]], Any] | None
    _filter_fields: tuple[tuple[str, Callable[[Any], Any]], ...]
    _maskers: tuple[tuple[str, Callable[[Any], Any], Masker], ...]

    @property
    def sortable(self) -> tuple[str, ...]:
        """The fields the role may sort on: the first key column and the indexed ones, unmasked.

        The indexes are the view's as the product copied them (control copies them again when
        the view is redefined); a read checks those of the generation it reads.
        """
        first_key = self.product.key[0] if self.product.key else None
        return tuple(
            f
            for f in self.fields
            if (f == first_key or f in self.product.indexes)
            and f not in self.masked
            and is_ordered(self.types[f])
        )

    def visible(self, row: dict[str, Any]) -> bool:
        """Whether the row filter holds for ``row`` (the view row's JSON object)."""
        if self._filter is None:
            return True
        values = {name: decode(row.get(name)) for name, decode in self._filter_fields}
        try:
            return self._filter(values) is True
        except EvalError as exc:
            # A filter that fails on a row (say, a division by zero) hides it, as a WHERE
            # clause that fails would return no rows.
            log.warning(
                "product %s role %s: the row filter failed on a row: %s",
                self.product.name,
                self.role,
                exc,
            )
            return False

    def present(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The row as the role sees it (its fields, masked), None when it may not see it."""
        if not self.visible(row):
            return None
        out = {name: row.get(name) for name in self.fields}
        for name, decode, mask in self._maskers:
            raw = out[name]
            if raw is not None:
                out[name] = mask(decode(raw))
        return out

    def present_raw(self, raw: bytes) -> dict[str, Any] | None:
        """:meth:`present` of a row's JSON text."""
        row = orjson.loads(raw)
        return self.present(row) if isinstance(row, dict) else None


class _RecordingScope(ProductScope):
    """Records the fields a filter reads: only they are decoded to evaluate it."""

    def __init__(self, types: dict[str, str]) -> None:
        super().__init__(types)
        self.used: list[str] = []

    def column(self, fields: tuple[str, ...], location: int) -> Any:
        compiled = super().column(fields, location)
        if fields[0] not in self.used:
            self.used.append(fields[0])
        return compiled


def readable_grants(catalog: Catalog, grants: Grants, key: ApiKeySpec) -> list[Grant]:
    """The grants of every product ``key`` may read and serve can serve (for listings).

    A product that cannot be served (:class:`Unavailable`, logged) is left out rather than
    failing the listing, the OpenAPI document or the GraphQL schema of every other product.
    """
    out: list[Grant] = []
    for product in catalog.products():
        if may_read(key, product) is None:
            continue
        try:
            out.append(grants.for_key(key, product.name))
        except (Forbidden, Unavailable):  # deleted or changed since products(); or unservable
            continue
    return out


class Grants:
    """Compiled grants, per (product, generation, role), rebuilt when the product changes."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int, str, str], Grant] = {}

    def for_key(self, key: ApiKeySpec, product_name: str) -> Grant:
        """The grant under which ``key`` reads ``product_name``.

        Raises:
            Forbidden: the product does not exist or the key may not read it.
            Unavailable: the product's mask salt cannot be decrypted (serve's
                ``FRESHET_SECRET_KEY`` is not control's): this product cannot be served, others
                can.
        """
        product = self._catalog.product(product_name)
        role = may_read(key, product) if product is not None else None
        if product is None or role is None:
            raise Forbidden(f"this API key may not read product {product_name!r}")
        cache_key = (product.name, product.generation, product.hash_salt_encrypted, role)
        with self._lock:
            grant = self._cache.get(cache_key)
        if grant is None:
            try:
                grant = self.build(product, role, self._catalog.salt)
            except ConfigError as exc:
                log.error("product %s cannot be served: %s", product.name, exc)
                raise Unavailable(f"product {product.name!r} cannot be served: {exc}") from None
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[cache_key] = grant
        return grant

    @staticmethod
    def build(
        product: ProductSpec, role: str, salt: Callable[[ProductSpec], bytes | None]
    ) -> Grant:
        """The grant of ``role`` (one of ``product``'s roles) on ``product``.

        ``salt`` gives the product's decrypted ``hash`` salt; it is called only when the role
        masks a field (:meth:`Catalog.salt` raises when serve lacks the secret key).
        """
        spec = product.roles[role]
        types = {c.name: c.type for c in product.columns}
        compiled = None
        filter_fields: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
        if spec.row_filter is not None:
            scope = _RecordingScope(types)
            try:
                compiled = compile_row_filter(spec.row_filter, scope)
            except SqlError as exc:
                # Control checked it against the same compiler: only a version skew gets here.
                # Hide every row rather than show rows the role may not see.
                log.error(
                    "product %s role %s: the row filter does not compile: %s",
                    product.name,
                    role,
                    exc,
                )
                return Grant(
                    product,
                    role,
                    product.fields,
                    types,
                    frozenset(product.fields),
                    lambda _row: False,
                    (),
                    (),
                )
            filter_fields = tuple((name, decoder(types[name])) for name in scope.used)
        salt_bytes = salt(product) if spec.masks else None
        maskers = tuple(
            (name, decoder(types[name]), masker(rule, types[name], salt_bytes))
            for name, rule in spec.masks.items()
            if name in types
        )
        return Grant(
            product=product,
            role=role,
            fields=product.fields,
            types=types,
            masked=frozenset(spec.masks),
            _filter=compiled.fn if compiled is not None else None,
            _filter_fields=filter_fields,
            _maskers=maskers,
        )

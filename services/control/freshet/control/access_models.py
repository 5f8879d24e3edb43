"""Request and response bodies of ``/v1/products`` and ``/v1/keys``.

Kept apart from :mod:`freshet.control.models` (sources and views): these two resources are the
access side of serve.

Products are ``{"name", "view", "fields", "roles": {role: {"row_filter", "masks"}},
"publish_topic", "topic_role"}``. A product published as a Kafka topic names the role whose row
filter and masks apply to the topic (a topic reader presents no key). A product always exposes
the key columns of its view (serve addresses a row by its key): those missing from ``fields``
are added in front of them, and the answer shows the fields exposed. A product's response never
carries the salt of its ``hash`` masks.

API keys are ``{"name", "roles", "products", "expires_at"}``. The answer to ``POST /v1/keys`` is
the only one that carries the key itself (``"key": "fsk_<id>_<secret>"``); no answer ever carries
the secret again, nor its hash.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from freshet.common.pipelines.spec import MAX_EXPRESSION, FieldName, MaskRule
from freshet.common.products import ApiKeySpec, ProductSpec
from freshet.common.schemas import NAME_PATTERN, Name, OutputColumn

RoleName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""An access role: lower-case letter, then letters, digits or ``_`` (at most 63)."""

ALL_PRODUCTS = "*"
ProductRef = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z][a-z0-9_]{0,62})$")]
"""A product name, or ``"*"`` for every product."""

MAX_ROLES = 100
MAX_FIELDS = 1600  # PostgreSQL's limit on a table's columns


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class RoleIn(_Request):
    """What one role of a product sees: which rows, and which fields masked how."""

    row_filter: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EXPRESSION,
        description="A SQL boolean expression over the product's fields; omit for every row. "
        "It may use only the fields the product exposes and deterministic functions (no now()).",
    )
    masks: dict[FieldName, MaskRule] = Field(
        default_factory=dict,
        description="Field -> mask rule (hash, redact, keep_last, null). Key fields cannot be "
        "masked; 'hash' uses a random salt control keeps per product.",
    )


class _ProductFields(_Request):
    view: Name
    fields: list[FieldName] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FIELDS,
        description="The view's columns exposed, in this order; omit for all. The view's key "
        "columns are always exposed: those not listed are added in front.",
    )
    roles: dict[RoleName, RoleIn] = Field(
        min_length=1,
        max_length=MAX_ROLES,
        description="Role -> its row filter and masks. A key reads the product through the "
        "first of its roles listed here; a key with none of them cannot read it.",
    )
    publish_topic: bool = Field(
        default=False,
        description="Also publish the product as its own compacted Kafka topic "
        "(freshet.product.<name>), as topic_role sees it.",
    )
    topic_role: RoleName | None = Field(
        default=None,
        description="The role whose row filter and masks apply to the product's topic: one of "
        "roles, required when publish_topic is true (a topic reader presents no API key).",
    )


class ProductCreate(_ProductFields):
    """Body of ``POST /v1/products``."""

    name: Name


class ProductReplace(_ProductFields):
    """Body of ``PUT /v1/products/{name}``: the whole new spec (``name`` may be repeated)."""

    name: Name | None = None


class RoleOut(BaseModel):
    row_filter: str | None
    masks: dict[str, MaskRule]


class ProductOut(BaseModel):
    """A product as the API shows it; the salt of its hash masks is never shown."""

    name: str
    view: str
    fields: list[str] = Field(description="The fields exposed, key columns included.")
    key: list[str] = Field(
        description="The view's key: rows are addressed by it. Parts named _key<n> are not "
        "fields: they are only in the record key of the view's topic."
    )
    columns: list[OutputColumn] = Field(description="The exposed fields with the view's types.")
    indexes: list[str] = Field(
        description="The exposed fields the view indexes (kept up to date when the view is "
        "redefined): rows can be sorted on them and on the first key column."
    )
    roles: dict[str, RoleOut]
    publish_topic: bool
    topic_role: str | None
    generation: int

    @classmethod
    def from_spec(cls, spec: ProductSpec) -> ProductOut:
        return cls(
            name=spec.name,
            view=spec.view,
            fields=list(spec.fields),
            key=list(spec.key),
            columns=list(spec.columns),
            indexes=list(spec.indexes),
            roles={
                role: RoleOut(row_filter=r.row_filter, masks=dict(r.masks))
                for role, r in spec.roles.items()
            },
            publish_topic=spec.publish_topic,
            topic_role=spec.topic_role,
            generation=spec.generation,
        )


class ProductList(BaseModel):
    """Body of ``GET /v1/products``: every product, sorted by name."""

    products: list[ProductOut]


class KeyCreate(_Request):
    """Body of ``POST /v1/keys``."""

    name: str = Field(min_length=1, max_length=200, description="A label for people.")
    roles: list[RoleName] = Field(min_length=1, max_length=MAX_ROLES)
    products: list[ProductRef] = Field(
        min_length=1,
        max_length=10_000,
        description='Product names the key may read (they need not exist yet), or ["*"].',
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (ISO-8601 with a time zone)."
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, exact (no float rounding)."""
    return (moment - EPOCH) // _MS


def _from_ms(ms: int) -> datetime:
    return EPOCH + ms * _MS


class KeyOut(BaseModel):
    """An API key as the API shows it: never its secret, never the secret's hash."""

    id: str
    name: str
    roles: list[str]
    products: list[str]
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def from_spec(cls, spec: ApiKeySpec) -> KeyOut:
        return cls(
            id=spec.id,
            name=spec.name,
            roles=list(spec.roles),
            products=list(spec.products),
            created_at=_from_ms(spec.created_at_ms),
            expires_at=None if spec.expires_at_ms is None else _from_ms(spec.expires_at_ms),
        )


class KeyCreated(KeyOut):
    """Answer of ``POST /v1/keys``: the only answer that carries the key itself."""

    key: str = Field(
        description="The API key, fsk_<id>_<secret>: shown this once, store it now. Control "
        "keeps only the SHA-256 of the secret and cannot show it again."
    )


class KeyList(BaseModel):
    """Body of ``GET /v1/keys``: every key (without secrets), sorted by id."""

    keys: list[KeyOut]

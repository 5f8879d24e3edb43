"""Desired state of data products and API keys (``freshet.control.products`` / ``.keys``).

A product exposes some fields of one view. Per access role it may narrow the rows (a SQL
expression over the product's fields, in the safe expression language) and mask fields (the
pipelines' mask rules). An API key names the roles it holds and the products it may read; its
secret is shown once when created and only its SHA-256 hash is stored.

Which rule applies to a request: the key must list the product (or ``"*"``), and the first of
the key's roles that the product defines gives the row filter and the masks. A key none of whose
roles the product defines may not read it.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from freshet.common.pipelines.spec import MaskRule
from freshet.common.schemas import Name, OutputColumn

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

    ``key`` and ``columns`` are copied from the view when the product is defined (``columns``
    are the exposed fields with their types); ``hash_salt_encrypted`` is the Fernet-encrypted
    salt of ``hash`` masks (see :mod:`freshet.common.secrets`), never returned by an API.
    """

    name: Name
    view: Name
    fields: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[OutputColumn, ...]
    roles: dict[str, ProductRole]
    publish_topic: bool = False
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

"""API keys: how control makes them, and the one format serve checks them by.

A key reads ``fsk_<id>_<secret>``: ``<id>`` is 12 lower-case letters and digits (it finds the
key's record on ``freshet.control.keys``, whose record key it is), ``<secret>`` is
``secrets.token_urlsafe(32)`` (43 characters of ``[A-Za-z0-9_-]``, so it may itself contain
``_``: split the key on its first two ``_`` only). The record holds only
``sha256(<secret> as UTF-8)`` in hexadecimal; a reader compares it in constant time.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

from freshet.common.products import API_KEY_PREFIX

ID_LENGTH = 12
ID_ALPHABET = string.ascii_lowercase + string.digits
SECRET_BYTES = 32


def secret_sha256(secret: str) -> str:
    """The hexadecimal SHA-256 of a key's secret, as ``ApiKeySpec.secret_sha256`` holds it."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, repr=False)
class NewKey:
    """A key just made. Its ``secret`` must go to the client once and nowhere else (not repr'd)."""

    id: str
    secret: str

    @property
    def full(self) -> str:
        """The key as the client sends it: ``fsk_<id>_<secret>``."""
        return f"{API_KEY_PREFIX}_{self.id}_{self.secret}"

    @property
    def sha256(self) -> str:
        return secret_sha256(self.secret)

    def __repr__(self) -> str:
        return f"NewKey(id={self.id!r}, secret=<hidden>)"


def new_key() -> NewKey:
    """A random key id and secret (``secrets``, the OS's CSPRNG)."""
    key_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
    return NewKey(key_id, secrets.token_urlsafe(SECRET_BYTES))

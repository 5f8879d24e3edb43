"""What serve's API knows of the control plane: products, API keys and the views' statuses.

Every replica folds the compacted topics ``freshet.control.products`` and
``freshet.control.keys`` and the status topic ``freshet.status`` whole (they are small), each in
a follower thread (:class:`~freshet.common.kafka.CompactedTopicView`), so any replica answers
any request. Records that do not validate are logged without their values and ignored.

Read-your-writes needs, per view generation, the view topic's offsets below which every row
reflecting the view's ``applied`` positions lies: transform reports them in ``outputs`` of its
status, per worker since it started, so the catalog keeps the maximum per partition over every
status it has seen (:meth:`Catalog.outputs`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from freshet.common import codec, topics
from freshet.common.kafka import CompactedTopicView, ensure_topics
from freshet.common.products import ApiKeySpec, ProductSpec
from freshet.common.schemas import DataflowStatus
from freshet.common.secrets import SecretBox
from freshet.common.statusboard import StatusBoard
from freshet.serve.config import ServeSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

START_TIMEOUT_S = 60.0


def _decoder(model: type[M]) -> Callable[[bytes], M | None]:
    def decode(raw: bytes) -> M | None:
        try:
            return model.model_validate(codec.loads(raw))
        except (ValidationError, ValueError) as exc:
            fields = (
                ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
                if isinstance(exc, ValidationError)
                else "not JSON"
            )
            log.warning("ignoring an unreadable %s record (%s)", model.__name__, fields)
            return None

    return decode


class Catalog:
    """Products, API keys and statuses, followed from their topics (see the module docstring)."""

    def __init__(self, settings: ServeSettings) -> None:
        self._settings = settings
        key = settings.secret_key
        self._box = SecretBox(key) if key.get_secret_value() else None
        self._lock = threading.Lock()
        self._outputs: dict[tuple[str, int], dict[int, int]] = {}
        self._salts: dict[tuple[str, str], bytes] = {}
        self._version = 0
        self._products: CompactedTopicView | None = None
        self._keys: CompactedTopicView | None = None
        self.status = StatusBoard()

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Read the three topics to their ends, then follow them.

        Raises:
            freshet.common.exceptions.KafkaError: a topic cannot be read within ``timeout``.
        """
        bootstrap = self._settings.kafka_bootstrap
        ensure_topics(bootstrap, topics.control_topics(self._settings.topic_partitions))
        self._products = CompactedTopicView(
            bootstrap, topics.CONTROL_PRODUCTS, _decoder(ProductSpec), self._product_changed
        )
        self._keys = CompactedTopicView(bootstrap, topics.CONTROL_KEYS, _decoder(ApiKeySpec))
        self.status = _ServeStatusBoard(self._status_changed)
        self._products.start(timeout)
        self._keys.start(timeout)
        self.status.start(bootstrap, timeout)

    def close(self) -> None:
        for view in (self._products, self._keys):
            if view is not None:
                view.close()
        self._products = self._keys = None
        self.status.close()

    @property
    def ready(self) -> bool:
        return self._products is not None and self._keys is not None and self.status.started

    # --- products and keys ---------------------------------------------------------------

    def product(self, name: str) -> ProductSpec | None:
        if self._products is None:
            return None
        found: ProductSpec | None = self._products.get(name)
        return found

    def products(self) -> list[ProductSpec]:
        if self._products is None:
            return []
        return [spec for _name, spec in self._products.items() if spec is not None]

    def key(self, key_id: str) -> ApiKeySpec | None:
        if self._keys is None:
            return None
        found: ApiKeySpec | None = self._keys.get(key_id)
        return found

    @property
    def version(self) -> int:
        """Counts the changes of products: what is built from them is rebuilt when it moves."""
        return self._version

    def salt(self, product: ProductSpec) -> bytes | None:
        """The decrypted salt of ``product``'s ``hash`` masks (None if it has none).

        Raises:
            freshet.common.exceptions.ConfigError: serve has no ``FRESHET_SECRET_KEY``, or not
                the one control encrypted the salt with.
        """
        if not product.hash_salt_encrypted:
            return None
        cache_key = (product.name, product.hash_salt_encrypted)
        with self._lock:
            salt = self._salts.get(cache_key)
        if salt is None:
            box = self._box or SecretBox(self._settings.secret_key)  # raises: no key set
            salt = box.decrypt(product.hash_salt_encrypted).get_secret_value().encode()
            with self._lock:
                self._salts[cache_key] = salt
        return salt

    def _product_changed(self, _key: str, _value: Any) -> None:
        with self._lock:
            self._version += 1

    # --- views' statuses -----------------------------------------------------------------

    def outputs(self, view: str, generation: int) -> dict[int, int]:
        """Per partition of the view's topic, the highest ``outputs`` offset seen for it."""
        with self._lock:
            return dict(self._outputs.get((view, generation), {}))

    def _status_changed(self, key: str, value: Any) -> None:
        kind, _, name = key.partition("/")
        if kind != "view" or not isinstance(value, dict):
            return
        try:
            status = DataflowStatus.model_validate(value)
        except ValidationError:
            return
        with self._lock:
            held = self._outputs.setdefault((name, status.generation), {})
            for partition, end in status.outputs.items():
                if end > held.get(partition, 0):
                    held[partition] = end


class _ServeStatusBoard(StatusBoard):
    """A status board that also tells the catalog of every status it applies."""

    def __init__(self, on_change: Callable[[str, Any], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def _changed(self, key: str, value: Any) -> None:
        self._on_change(key, value)
        super()._changed(key, value)

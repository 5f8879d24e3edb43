r"""Views in Redis: the fast read path (a row by key, rows in key order, equality filters).

Layout, with ``<root>`` = ``serve_redis_prefix`` (``freshet:serve``), ``<v>`` = ``<root>:{<view>}``
(the braces are a Redis Cluster hash tag: every key of a view lives in one slot, so one script
may write them all) and ``<g>`` = ``<v>:g<generation>``. ``K`` is the view key encoded by
:mod:`freshet.serve.materialize.keys`: bytes whose order is the key's order (PostgreSQL's, NULLs
last) and whose equality is the key's equality.

==========================  =================================================================
key                         content
==========================  =================================================================
``<root>:views``            set of the views that have data here (for clean-up)
``<v>:gen``                 hash: ``building`` = the generation being written (writers of
                            another generation are fenced), ``ready`` = the newest generation
                            that has been complete once (what readers should read)
``<g>:rows``                hash: ``K`` -> the row JSON exactly as the view topic carries it
``<g>:keys``                sorted set of every ``K``, all scores 0: ``ZRANGEBYLEX`` lists rows
                            in key order; the cursor is the last ``K`` returned
                            (``(K`` to ``+``)
``<g>:idx:<field>``         sorted set, scores 0, one per field the view indexes (its
                            ``indexes`` but the first key column): ``E(value) + K`` where
                            ``E`` is the field's tagged encoding. ``field = v`` in key order
                            is ``ZRANGEBYLEX [E(v) (E(v)\xff`` (a cursor continues from
                            ``(E(v)+K``); ranges of values work the same way
``<g>:ix``                  hash: ``K`` -> the row's indexed encodings (each a 4-byte length
                            and the bytes), to remove its old index entries when it changes
``<g>:meta``                hash: ``o:<partition>`` = next offset to apply,
                            ``a:<partition>`` = ``freshet.applied`` header of the last record
                            applied there, ``layout`` = the generation's fields and key (JSON)
``<g>:changes``             stream, one entry per change applied, in the order applied:
                            ``k`` = ``K``, ``kj`` = the key as the topic's key JSON object,
                            ``r`` = the new row JSON (empty for a delete), ``b`` = the row JSON
                            held before (empty when there was none); capped at
                            ``serve_changes_retained`` entries (``MAXLEN ~``: at least that many)
==========================  =================================================================

A batch is one Lua script: it checks that ``building`` is its generation and that the offsets
are the ones it expects, applies the rows and their index entries, and moves the offsets, all
atomically. Batches are kept small (``serve_redis_batch`` records) so that no script blocks
readers for long. The same script appends the change stream: an entry exists exactly when its
change was applied (a batch fenced or replayed adds none), and a change that alters nothing (a
row written again unchanged, a delete of a key that is not there) adds none either. Within a
batch only the last change of a key is applied (:class:`~freshet.serve.materialize.batch.Batch`),
so the stream holds that one. The before image lets a reader decide per role whether a change is
an upsert, a delete or nothing for it (:mod:`freshet.serve.read.changes`).

A new generation is written beside the old one; once it has caught up with the topic it becomes
``ready`` and the old generation's keys are unlinked (its change stream with them).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import orjson
import redis

from freshet.common.kafka import CHANGE_FETCH_WAIT_MS
from freshet.common.sql.types import encoder as json_encoder
from freshet.serve.exceptions import Fenced, StaleGeneration
from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.base import ViewStore

log = logging.getLogger(__name__)

SCAN_COUNT = 1000
CHANGES_RETAINED = 100_000
"""Default of ``serve_changes_retained``: entries kept in a generation's change stream."""

_CLAIM = """
local building = tonumber(redis.call('HGET', KEYS[1], 'building') or '0')
local gen = tonumber(ARGV[1])
if building > gen then
  return redis.error_reply('STALE generation ' .. building .. ' is being built')
end
if building < gen then
  redis.call('HSET', KEYS[1], 'building', ARGV[1])
end
redis.call('HSET', KEYS[2], 'layout', ARGV[2])
return redis.call('HGETALL', KEYS[2])
"""

_APPLY = """
-- KEYS: gen, meta, rows, keys, ix, changes, then one index per indexed field
-- ARGV: generation, changes retained, partition count, (partition, start, end, applied) per
--       partition, then (K, key JSON, row or '' to delete, packed index encodings) per change
if redis.call('HGET', KEYS[1], 'building') ~= ARGV[1] then
  return redis.error_reply('FENCED generation ' .. ARGV[1] .. ' is no longer being built')
end
local retained = ARGV[2]
local np = tonumber(ARGV[3])
local i = 4
for _ = 1, np do
  local held = redis.call('HGET', KEYS[2], 'o:' .. ARGV[i]) or '0'
  if held ~= ARGV[i + 1] then
    return redis.error_reply('FENCED partition ' .. ARGV[i] .. ' is at offset ' .. held ..
      ', not ' .. ARGV[i + 1])
  end
  i = i + 4
end
local nidx = #KEYS - 6
local function entries(packed)
  local out, pos = {}, 1
  for f = 1, nidx do
    local len, at = struct.unpack('>I4', packed, pos)
    out[f] = string.sub(packed, at, at + len - 1)
    pos = at + len
  end
  return out
end
local function changed(k, kj, row, before)
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', retained, '*', 'k', k, 'kj', kj, 'r', row,
    'b', before or '')
end
local applied = 0
while i <= #ARGV do
  local k, kj, row, packed = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local before = redis.call('HGET', KEYS[3], k)
  if row == '' then
    local old = nidx > 0 and redis.call('HGET', KEYS[5], k)
    if old then
      local olds = entries(old)
      for f = 1, nidx do
        redis.call('ZREM', KEYS[6 + f], olds[f] .. k)
      end
      redis.call('HDEL', KEYS[5], k)
    end
    redis.call('ZREM', KEYS[4], k)
    if before then
      redis.call('HDEL', KEYS[3], k)
      changed(k, kj, row, before)
      applied = applied + 1
    end
  elseif before ~= row then
    if nidx > 0 then
      local old = redis.call('HGET', KEYS[5], k)
      if old ~= packed then
        local olds = old and entries(old) or nil
        local news = entries(packed)
        for f = 1, nidx do
          if not olds or olds[f] ~= news[f] then
            if olds then
              redis.call('ZREM', KEYS[6 + f], olds[f] .. k)
            end
            redis.call('ZADD', KEYS[6 + f], 0, news[f] .. k)
          end
        end
        redis.call('HSET', KEYS[5], k, packed)
      end
    end
    redis.call('HSET', KEYS[3], k, row)
    if not before then
      redis.call('ZADD', KEYS[4], 0, k)  -- a row held before is listed already
    end
    changed(k, kj, row, before)
    applied = applied + 1
  end
end
i = 4
for _ = 1, np do
  redis.call('HSET', KEYS[2], 'o:' .. ARGV[i], ARGV[i + 2])
  if ARGV[i + 3] ~= '' then
    redis.call('HSET', KEYS[2], 'a:' .. ARGV[i], ARGV[i + 3])
  end
  i = i + 4
end
return applied
"""

_READY = """
if redis.call('HGET', KEYS[1], 'building') ~= ARGV[1] then
  return redis.error_reply('FENCED generation ' .. ARGV[1] .. ' is no longer being built')
end
redis.call('HSET', KEYS[1], 'ready', ARGV[1])
return 1
"""


def pack_entries(entries: list[bytes]) -> bytes:
    """Index encodings as the ``ix`` hash keeps them: each a 4-byte length and the bytes."""
    return b"".join(struct.pack(">I", len(e)) + e for e in entries)


class RedisKeys:
    """The key names of one view (and one generation of it) under ``root``."""

    def __init__(self, root: str, view: str, generation: int = 0) -> None:
        self.root = root
        self.view = f"{root}:{{{view}}}"
        self.gen_prefix = f"{self.view}:g{generation}"

    @property
    def views(self) -> str:
        return f"{self.root}:views"

    @property
    def gen(self) -> str:
        return f"{self.view}:gen"

    @property
    def meta(self) -> str:
        return f"{self.gen_prefix}:meta"

    @property
    def rows(self) -> str:
        return f"{self.gen_prefix}:rows"

    @property
    def keys(self) -> str:
        return f"{self.gen_prefix}:keys"

    @property
    def ix(self) -> str:
        return f"{self.gen_prefix}:ix"

    @property
    def changes(self) -> str:
        return f"{self.gen_prefix}:changes"

    def index(self, field: str) -> str:
        return f"{self.gen_prefix}:idx:{field}"


def _unlink_matching(client: Any, pattern: str, keep_prefix: str | None = None) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        if keep_prefix is not None and key.decode().startswith(keep_prefix):
            continue
        batch.append(key)
        if len(batch) >= SCAN_COUNT:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def drop_view(client: Any, root: str, view: str) -> int:
    """Unlink every key of ``view`` (all generations); the number of keys removed."""
    keys = RedisKeys(root, view)
    removed = _unlink_matching(client, _glob_escape(keys.view) + ":*")
    client.srem(keys.views, view)
    if removed:
        log.info("redis: dropped %s (%d keys)", view, removed)
    return removed


def built_views(client: Any, root: str) -> set[str]:
    return {m.decode() for m in client.smembers(f"{root}:views")}


class RedisStore(ViewStore):
    """One view generation in Redis (see the module docstring for the layout)."""

    kind = "redis"
    fetch_wait_ms = CHANGE_FETCH_WAIT_MS  # the read path: every row served waits for it

    def __init__(
        self,
        client: redis.Redis,
        root: str,
        layout: ViewLayout,
        max_records: int,
        changes_retained: int = CHANGES_RETAINED,
    ) -> None:
        self._r: Any = client
        self._layout = layout
        self.keys = RedisKeys(root, layout.name, layout.generation)
        self.max_records = max_records
        self.changes_retained = changes_retained
        self._claim = self._r.register_script(_CLAIM)
        self._apply = self._r.register_script(_APPLY)
        self._ready = self._r.register_script(_READY)
        self._index_keys = [self.keys.index(c.name) for c in layout.indexed]
        self._encode_index = layout.index_encoder()
        self._key_json = _key_json(layout)

    def open(self, partitions: list[int]) -> dict[int, int]:
        keys = self.keys
        self._r.sadd(keys.views, self._layout.name)
        held = self._r.hget(keys.meta, "layout")
        if held is not None and orjson.loads(held) != self._layout.describe():
            # The same generation with other fields: a view deleted and created again under its
            # name before serve could drop it. Built again from the beginning.
            removed = _unlink_matching(self._r, _glob_escape(keys.gen_prefix) + ":*")
            log.info("redis: %s had another layout; removed %d keys", self._layout.name, removed)
        try:
            meta = self._claim(
                keys=[keys.gen, keys.meta],
                args=[self._layout.generation, orjson.dumps(self._layout.describe())],
            )
        except redis.ResponseError as exc:
            raise _translate(exc) from None
        fields = dict(zip(meta[::2], meta[1::2], strict=True))
        offsets = {p: 0 for p in partitions}
        for name, value in fields.items():
            kind, _, partition = name.decode().partition(":")
            if kind == "o":
                offsets[int(partition)] = int(value)
        return offsets

    def write(self, batch: Batch) -> None:
        keys = self.keys
        args: list[Any] = [self._layout.generation, self.changes_retained, len(batch.end)]
        for partition, end in batch.end.items():
            args += [partition, batch.start[partition], end, batch.applied.get(partition, b"")]
        indexed = bool(self._index_keys)
        key_json = self._key_json
        for change in batch.changes.values():
            if change.row is None:
                args += [change.key, key_json(change.key_values), b"", b""]
            else:
                packed = pack_entries(self._encode_index(change.row)) if indexed else b""
                args += [change.key, key_json(change.key_values), change.row, packed]
        try:
            self._apply(
                keys=[
                    keys.gen,
                    keys.meta,
                    keys.rows,
                    keys.keys,
                    keys.ix,
                    keys.changes,
                    *self._index_keys,
                ],
                args=args,
            )
        except redis.ResponseError as exc:
            raise _translate(exc) from None

    def caught_up(self) -> None:
        keys = self.keys
        try:
            self._ready(keys=[keys.gen], args=[self._layout.generation])
        except redis.ResponseError as exc:
            raise _translate(exc) from None
        removed = _unlink_matching(
            self._r, _glob_escape(keys.view) + ":g[0-9]*", keep_prefix=keys.gen_prefix + ":"
        )
        if removed:
            log.info(
                "redis: %s generation %d is ready; removed %d keys of older ones",
                self._layout.name,
                self._layout.generation,
                removed,
            )


def _key_json(layout: ViewLayout) -> Callable[[tuple[Any, ...]], bytes]:
    """Key values -> the key as a JSON object in the view topic's form (the ``kj`` of a change)."""
    fields = [(k.name, json_encoder(k.type)) for k in layout.key]

    def encode(values: tuple[Any, ...]) -> bytes:
        return orjson.dumps({name: enc(v) for (name, enc), v in zip(fields, values, strict=True)})

    return encode


def _translate(exc: redis.ResponseError) -> Exception:
    message = str(exc)
    if message.startswith("STALE"):
        return StaleGeneration(message)
    if message.startswith("FENCED"):
        return Fenced(message)
    return exc

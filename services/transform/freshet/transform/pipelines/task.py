"""One pipeline at work: consume its tables' change topics, run its nodes, write its sinks.

A batch is: poll what the inputs have, sort it by source position (the changes of one
transaction, and a looked-up row changed before the event that needs it, come in commit order),
run every event through the :class:`~freshet.transform.pipelines.nodes.Executor`, write the sink
records (and dead letters), wait until the broker acknowledged all of them, then commit the
consumed offsets, the looked-up rows that changed and the per-node counts to the
:class:`~freshet.transform.store.Store` in one transaction.

Delivery to sinks is at-least-once: a crash between the acknowledgement and the commit replays
the batch from the committed offsets against the committed lookup rows, and the same records
are written again. They carry the source event's key, so a consumer that keeps the last value
per key (a compacted topic, an upsert) ends the same. Events ingest itself sent twice are
processed twice as well; looked-up rows are versioned by source position, so their replays
change nothing.

A poison event - a value that does not decode, an expression that fails (division by zero, a
cast of bad text), an event that is not a change event - goes to ``freshet.dlq.<pipeline>``,
counted, and the pipeline goes on. The dead letter's key is the event's; its value is JSON
``{"pipeline", "generation", "node", "error", "topic", "partition", "offset", "key", "value"}``
(the original key and value as text, or base64 with ``"encoding": "base64"`` when they are not
UTF-8) and its headers repeat ``freshet.dlq.node`` and ``freshet.dlq.error``. A dead letter holds
the original event, unmasked: restrict who may read the DLQ topic as you do the source topics.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer

from freshet.common import topics
from freshet.common.kafka import consumer_config, ensure_topics, producer_config
from freshet.common.pipelines import MaskNode, PipelinePlan, PipelineSpec
from freshet.common.schemas import DataflowState, DataflowStatus, NodeCounts
from freshet.common.secrets import SecretBox
from freshet.common.topics import TopicSpec
from freshet.transform.config import TransformSettings
from freshet.transform.pipelines.lookup import LookupTables, store_table
from freshet.transform.pipelines.nodes import Executor, NodeFailure, check_event
from freshet.transform.runtime import (
    FETCH_WAIT_MS,
    Frontier,
    Headers,
    Outbox,
    StatusPacer,
    assign_inputs,
    changed_offsets,
    consumer_lag,
    headers_of,
    poll_batch,
)
from freshet.transform.store import Store
from freshet.transform.views.engine import event_position

log = logging.getLogger(__name__)

MAX_BATCH = 5000
DLQ_NODE_HEADER = "freshet.dlq.node"
DLQ_ERROR_HEADER = "freshet.dlq.error"
DLQ_COUNT = "_dlq"
"""The status entry counting dead letters (node ids cannot start with ``_``)."""
_COUNTS_META = "counts"


def salts_of(spec: PipelineSpec, box: SecretBox | None) -> dict[str, bytes]:
    """The decrypted salt of every mask node that hashes, by node id.

    Raises:
        ValueError: a mask node hashes without a salt, or there is no key to decrypt one.
        freshet.common.exceptions.ConfigError: a salt cannot be decrypted with the key.
    """
    salts: dict[str, bytes] = {}
    for node in spec.nodes:
        if isinstance(node, MaskNode) and node.hashes:
            if node.salt_encrypted is None:
                raise ValueError(f"mask node {node.id!r} hashes but its spec carries no salt")
            if box is None:
                raise ValueError("FRESHET_SECRET_KEY is not set: the mask salts cannot be read")
            salts[node.id] = box.decrypt(node.salt_encrypted).get_secret_value().encode()
    return salts


def _utf8(data: bytes | None) -> bool:
    if data is None:
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class PipelineTask:
    """Runs one pipeline until ``stop`` is set; raises on a failure (the service retries)."""

    def __init__(
        self,
        spec: PipelineSpec,
        plan: PipelinePlan,
        salts: dict[str, bytes],
        settings: TransformSettings,
        store: Store,
        publish_status: Callable[[DataflowStatus], None],
        instance: str,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self._settings = settings
        self._store = store
        self._publish = publish_status
        self._instance = instance
        self.lookups = LookupTables(plan)
        self.executor = Executor(plan, self.lookups, salts)
        self.state: DataflowState = "loading"
        self.events_in = 0
        self.events_out = 0
        self.dead_letters = 0
        self.lag = 0
        self.last_progress = time.monotonic()
        self.last_commit_ts_ms: int | None = None
        self._consumed: dict[tuple[str, int], int] = {}
        self._dlq = topics.dlq_topic(spec.name)
        self._pacer = StatusPacer()
        self._frontier: Frontier | None = None

    # --- status ---------------------------------------------------------------------------

    def status(
        self, state: DataflowState | None = None, reason: str | None = None
    ) -> DataflowStatus:
        """The status now.

        Per node: events in and out (a sink's out: records written, tombstones aside);
        ``_dlq``: dead letters.
        """
        now_ms = int(time.time() * 1000)
        freshness = None
        if self.last_commit_ts_ms is not None:
            freshness = 0 if self.lag == 0 else max(now_ms - self.last_commit_ts_ms, 0)
        nodes = {n: c.model_copy() for n, c in self.executor.counts.items()}
        nodes[DLQ_COUNT] = NodeCounts(events_in=self.dead_letters, events_out=self.dead_letters)
        return DataflowStatus(
            kind="pipeline",
            name=self.spec.name,
            state=state or self.state,
            reason=reason,
            generation=self.spec.generation,
            applied=dict(self._frontier.applied) if self._frontier else {},
            last_commit_ts_ms=self.last_commit_ts_ms,
            freshness_ms=freshness,
            lag=self.lag,
            nodes=nodes,
            events_in=self.events_in,
            events_out=self.events_out,
            instance=self._instance,
        )

    def _report(self, force: bool = False) -> None:
        """Publish the status if due (``force``: it has news; see :class:`StatusPacer`)."""
        if self._pacer.due(news=force):
            self._publish(self.status())

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        partitions = settings.topic_partitions
        specs = [TopicSpec(t, partitions) for t in self.plan.input_topics]
        specs += [TopicSpec(t, partitions) for t in self.plan.sink_topics]
        specs.append(TopicSpec(self._dlq, partitions))
        specs.append(TopicSpec(topics.POSITIONS, partitions, topics.COMPACTED))
        ensure_topics(settings.kafka_bootstrap, specs)
        producer = Producer(producer_config(settings.kafka_bootstrap, **{"linger.ms": 1}))
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                f"freshet-pipeline-{self.spec.name}-assigned",
                **{"fetch.wait.max.ms": FETCH_WAIT_MS},
            )
        )
        outbox = Outbox(producer, f"pipeline {self.spec.name}")
        try:
            self._start(consumer)
            self.state = "running"
            self._report(force=True)
            while not stop.is_set():
                self._batch(consumer, outbox)
        finally:
            consumer.close()
            producer.flush(10)
        log.info("pipeline %s stopped", self.spec.name)

    def _start(self, consumer: Consumer) -> None:
        store = self._store
        store.claim()
        for qualified in self.lookups.tables:
            self.lookups.load(qualified, store.rows(store_table(qualified)))
        counts = store.meta(_COUNTS_META).get("all")
        if counts is not None:
            self._restore_counts(orjson.loads(counts))
        self._consumed = store.offsets()
        self._frontier = assign_inputs(consumer, self.plan.input_topics, self._consumed)
        log.info(
            "pipeline %s loaded %d looked-up rows; consuming %d topics",
            self.spec.name,
            len(self.lookups),
            len(self.plan.input_topics),
        )

    def _restore_counts(self, saved: dict[str, Any]) -> None:
        self.events_in = int(saved.get("in", 0))
        self.events_out = int(saved.get("out", 0))
        self.dead_letters = int(saved.get("dlq", 0))
        self.last_commit_ts_ms = saved.get("ts")
        for node_id, (n_in, n_out) in saved.get("nodes", {}).items():
            if node_id in self.executor.counts:
                self.executor.counts[node_id] = NodeCounts(events_in=n_in, events_out=n_out)

    def _saved_counts(self) -> bytes:
        return orjson.dumps(
            {
                "in": self.events_in,
                "out": self.events_out,
                "dlq": self.dead_letters,
                "ts": self.last_commit_ts_ms,
                "nodes": {n: [c.events_in, c.events_out] for n, c in self.executor.counts.items()},
            }
        )

    def _batch(self, consumer: Consumer, outbox: Outbox) -> None:
        frontier = self._frontier
        assert frontier is not None
        messages = poll_batch(consumer, frontier, MAX_BATCH)
        consumed = dict(self._consumed)
        events: list[tuple[tuple[int, int], int, Message, dict[str, Any]]] = []
        for seq, msg in enumerate(messages):
            topic = msg.topic() or ""
            consumed[(topic, msg.partition() or 0)] = (msg.offset() or 0) + 1
            raw = msg.value()
            if raw is None:
                continue  # a tombstone after a delete: compaction's, not ours
            self.events_in += 1
            try:
                value = orjson.loads(raw)
                check_event(value)
                position = event_position(value)
            except (ValueError, TypeError, KeyError) as exc:
                self._dead_letter(
                    outbox, msg, self._entry_nodes(topic), f"not a change event: {exc}"
                )
                continue
            events.append((position, seq, msg, value))
        events.sort(key=lambda e: (e[0], e[1]))
        written = 0
        for _position, _seq, msg, value in events:
            try:
                outputs = self.executor.run(msg.topic() or "", msg.key(), value)
            except NodeFailure as failure:
                self._dead_letter(outbox, msg, failure.node, failure.message)
                continue
            ts = value["source"].get("ts_ms")
            if isinstance(ts, int):
                self.last_commit_ts_ms = ts
            headers = headers_of(msg)
            for output in outputs:
                value_bytes = None if output.value is None else orjson.dumps(output.value)
                outbox.send(output.topic, msg.key(), value_bytes, headers)
                written += output.value is not None
        if consumed != self._consumed:
            before = dict(frontier.applied)
            outbox.confirm()
            self.events_out += written
            applied = frontier.advance(consumed)
            self._store.commit(
                self.lookups.take_dirty(),
                changed_offsets(consumed, self._consumed),
                {f"{_COUNTS_META}:all": self._saved_counts()},
            )
            self._consumed = consumed
            self.last_progress = time.monotonic()
            self.lag = consumer_lag(consumer, self._consumed)
            self._report(force=applied != before)
        else:
            before = dict(frontier.applied)
            after = frontier.advance(self._consumed)
            self.lag = consumer_lag(consumer, self._consumed)
            self._report(force=after != before)

    def _entry_nodes(self, topic: str) -> str:
        nodes = list(self.plan.entry.get(topic, ()))
        for qualified, table in self.plan.lookup_tables.items():
            if table.topic == topic:
                nodes += self.plan.lookups[qualified]
        return ",".join(nodes) or "input"

    def _dead_letter(self, outbox: Outbox, msg: Message, node: str, error: str) -> None:
        letter = {
            "pipeline": self.spec.name,
            "generation": self.spec.generation,
            "node": node,
            "error": error,
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
        }
        key, value = msg.key(), msg.value()
        if _utf8(key) and _utf8(value):
            letter["key"] = None if key is None else key.decode()
            letter["value"] = None if value is None else value.decode()
        else:
            letter["key"] = None if key is None else base64.b64encode(key).decode()
            letter["value"] = None if value is None else base64.b64encode(value).decode()
            letter["encoding"] = "base64"
        headers: Headers = [
            *headers_of(msg),
            (DLQ_NODE_HEADER, node.encode()),
            (DLQ_ERROR_HEADER, error.encode()),
        ]
        outbox.send(self._dlq, msg.key(), orjson.dumps(letter), headers)
        self.dead_letters += 1
        # The reason stays out of the log: it may quote a value of the event.
        log.warning(
            "pipeline %s: node %s refused the event at %s/%s/%s; sent to %s with the reason",
            self.spec.name,
            node,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            self._dlq,
        )

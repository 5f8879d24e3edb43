"""OpenTelemetry set-up shared by all services.

Spans are exported to the ``otlp_spans`` Kafka topic as OTLP protobuf
``ExportTraceServiceRequest`` messages, the format of the OpenTelemetry Collector's Kafka
exporter, so control (or a collector) builds lineage from them. Trace context crosses Kafka in
W3C ``traceparent`` headers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from freshet.common import topics
from freshet.common.kafka import producer_config

log = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()

Headers = list[tuple[str, str | bytes | None]]


class KafkaSpanExporter(SpanExporter):
    """Writes each batch of finished spans as one OTLP protobuf message to ``otlp_spans``."""

    def __init__(self, bootstrap: str, topic: str = topics.SPANS) -> None:
        self._topic = topic
        self._producer = Producer(producer_config(bootstrap, **{"linger.ms": 50}))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._producer.produce(self._topic, value=encode_spans(spans).SerializeToString())
            self._producer.poll(0)
        except Exception:  # the exporter must never break the service it observes
            log.warning("span export to %s failed", self._topic, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._producer.flush(5)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._producer.flush(timeout_millis / 1000) == 0


def setup_tracing(
    service: str, instance: str, bootstrap: str | None, sample_ratio: float
) -> TracerProvider:
    """Build this process's tracer provider; spans go to Kafka when ``bootstrap`` is given.

    Returns the provider; call ``shutdown()`` on it when the process stops, to flush.
    """
    resource = Resource.create(
        {"service.name": f"freshet-{service}", "service.instance.id": instance}
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    if bootstrap:
        provider.add_span_processor(
            BatchSpanProcessor(KafkaSpanExporter(bootstrap), schedule_delay_millis=1000)
        )
    trace.set_tracer_provider(provider)
    return provider


def inject_headers(context: Context | None = None) -> Headers:
    """The W3C trace headers of the current (or given) context, for a Kafka record."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return [(k, v.encode()) for k, v in carrier.items()]


def extract_context(headers: Sequence[tuple[str, Any]] | None) -> Context:
    """The trace context carried by a Kafka record's headers (empty if there is none)."""
    carrier = {}
    for key, value in headers or ():
        if key in ("traceparent", "tracestate") and value is not None:
            carrier[key] = value.decode() if isinstance(value, bytes) else str(value)
    return _propagator.extract(carrier)

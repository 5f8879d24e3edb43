"""The transform worker: a faust-streaming app with ``/health`` and ``/metrics``.

Pipelines and views come later; this module only builds an app that joins its consumer group on
the configured broker and serves its health and metrics. The broker timings are the ones Tansu
needs (see DESIGN.md): a session of 6 s and a 1 s heartbeat.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from freshet.transform.config import TransformSettings

BROKER_SESSION_TIMEOUT_S = 6
BROKER_HEARTBEAT_INTERVAL_S = 1
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus text format; aiohttp refuses a charset in it, and UTF-8 is the format's default."""


class HealthView(View):
    """``GET /health``: 200 with ``{"status": "ok"}`` while the worker's web server runs."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.json({"status": "ok"})


class MetricsView(View):
    """``GET /metrics``: the process's Prometheus metrics in the text format 0.0.4."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.bytes(generate_latest(), content_type=METRICS_CONTENT_TYPE)


def create_app(settings: TransformSettings) -> faust.App:
    """Build the transform worker's faust app from ``settings``.

    Faust's own web pages (router, tables, statistics, graph) are switched off: they would show
    table contents to anyone who can reach the port. Only ``/health`` and ``/metrics`` are served.
    Nothing is started here; run the app with :func:`freshet.transform.__main__.main`.
    """
    app = faust.App(
        settings.transform_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_session_timeout=BROKER_SESSION_TIMEOUT_S,
        broker_heartbeat_interval=BROKER_HEARTBEAT_INTERVAL_S,
        store="memory://",
        datadir=str(settings.transform_data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_host=settings.transform_host,
        web_port=settings.transform_port,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
    )
    app.page("/health")(HealthView)
    app.page("/metrics")(MetricsView)
    return app

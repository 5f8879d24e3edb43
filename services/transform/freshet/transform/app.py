"""The transform worker: a faust-streaming app that hosts the views' reconciler.

Faust runs the worker: its lifecycle and signals, the web server with ``/health`` and
``/metrics``. The views themselves run in :class:`~freshet.transform.service.TransformService`
on confluent-kafka consumers with offsets kept in the views' durable store, not in faust agents
and tables: on the embedded broker faust's exactly-once needs transactions it lacks, and its
table recovery can stop short of a changelog's end (DESIGN.md). The broker timings are the ones
Tansu needs: a session of 6 s and a 1 s heartbeat.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import faust
from faust.web import Request, Response, View
from mode import Service
from prometheus_client import generate_latest

from freshet.transform.config import TransformSettings
from freshet.transform.service import TransformService

BROKER_SESSION_TIMEOUT_S = 6
BROKER_HEARTBEAT_INTERVAL_S = 1
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus text format; aiohttp refuses a charset in it, and UTF-8 is the format's default."""


class HealthView(View):
    """``GET /health``: 200 with the views and pipelines this worker runs, while it is alive."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        service: TransformService | None = getattr(self.app, "freshet_service", None)
        if service is None:
            return self.json({"status": "ok"})
        alive, detail = service.health()
        return self.json(
            {"status": "ok" if alive else "down", **detail}, status=200 if alive else 503
        )


class ReconcilerService(Service):
    """Runs the :class:`TransformService` in a thread for as long as the faust worker runs."""

    def __init__(self, service: TransformService, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._service.run, args=(self._stop,), name="reconciler", daemon=True
        )

    async def on_start(self) -> None:
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 60)


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


def attach_service(app: faust.App, service: TransformService) -> None:
    """Run ``service`` with the worker: started after faust starts, stopped before it stops."""
    app.freshet_service = service  # type: ignore[attr-defined]
    app.service(ReconcilerService(service))  # type: ignore[arg-type]

"""Health and Prometheus metrics endpoints for every service.

FastAPI services mount :func:`metrics_app`; services without a web framework (ingest) run
:class:`HealthServer`, a small threaded HTTP server with ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_asgi_app, make_wsgi_app

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def metrics_app() -> Any:
    """ASGI app serving the process's Prometheus metrics."""
    return make_asgi_app()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class HealthServer:
    """Serves ``/health`` (JSON, 200 or 503 from ``check``) and ``/metrics`` in a thread."""

    def __init__(self, host: str, port: int, check: HealthCheck) -> None:
        metrics = make_wsgi_app()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            if environ.get("PATH_INFO") == "/health":
                ok, detail = check()
                body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}).encode()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [body]
            if environ.get("PATH_INFO") == "/metrics":
                return list(metrics(environ, start_response))
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]

        self._server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

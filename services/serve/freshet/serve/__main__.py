"""``python -m freshet.serve``: run serve until SIGINT or SIGTERM.

Serve is its HTTP server and, in a thread, the materialization of views into Redis and
PostgreSQL.

Either signal shuts the server down gracefully, stops the materializers (leaving the consumer
group), flushes the spans and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
from types import FrameType

import uvicorn

from freshet.common.observability import configure_logging
from freshet.common.telemetry import setup_tracing
from freshet.serve.app import create_app
from freshet.serve.config import ServeSettings
from freshet.serve.service import ServeService


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Handler of a stop signal that uvicorn already acted on."""


def main() -> None:
    settings = ServeSettings()
    configure_logging(settings.log_level)
    instance = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    provider = setup_tracing(
        "serve", instance, settings.kafka_bootstrap, settings.trace_sample_ratio
    )
    # uvicorn handles SIGINT/SIGTERM itself, then raises the signal again under the handler that
    # was there before it started. With the default handler the process would die of the signal
    # before the spans are flushed; with this one uvicorn.run() returns and the process exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    try:
        uvicorn.run(
            create_app(settings, ServeService(settings, instance)),
            host=settings.serve_host,
            port=settings.serve_port,
            log_config=None,
            access_log=False,
        )
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()

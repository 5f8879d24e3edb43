"""Entry point: ``python -m freshet.ingest``."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading

from freshet.common.observability import HealthServer, configure_logging
from freshet.common.telemetry import setup_tracing
from freshet.ingest.config import IngestSettings
from freshet.ingest.service import IngestService


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level)
    instance = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    tracing = setup_tracing(
        "ingest", instance, settings.kafka_bootstrap, settings.trace_sample_ratio
    )
    service = IngestService(settings, instance)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    health = HealthServer(settings.ingest_host, settings.ingest_port, service.health)
    health.start()
    # What start-up made lives as long as the process: keep it out of the collector's work, so
    # full collections (pauses in the stream) stay short.
    gc.freeze()
    try:
        service.run(stop)
    finally:
        health.stop()
        tracing.shutdown()


if __name__ == "__main__":
    main()

"""``python -m freshet.transform``: run one transform worker until SIGINT or SIGTERM.

Either signal stops the worker cleanly (it leaves its consumer group) and the process exits 0.
"""

from __future__ import annotations

import os
import socket

from freshet.common.observability import configure_logging
from freshet.common.telemetry import setup_tracing
from freshet.transform.app import attach_service, create_app
from freshet.transform.config import TransformSettings
from freshet.transform.service import TransformService


def main() -> None:
    settings = TransformSettings()
    configure_logging(settings.log_level)
    instance = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    provider = setup_tracing(
        "transform", instance, settings.kafka_bootstrap, settings.trace_sample_ratio
    )
    settings.transform_data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    attach_service(app, TransformService(settings, instance))
    worker = app.Worker(loglevel=settings.log_level.lower(), quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()

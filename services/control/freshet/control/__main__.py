"""Run the control service: ``python -m freshet.control`` (settings from ``FRESHET_*``)."""

from __future__ import annotations

import os
import signal
import socket
from types import FrameType

import uvicorn
from pydantic import ValidationError

from freshet.common.exceptions import ConfigError
from freshet.common.observability import configure_logging
from freshet.common.telemetry import setup_tracing
from freshet.control.app import create_app
from freshet.control.config import ControlSettings


def _settings() -> ControlSettings:
    try:
        return ControlSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FRESHET_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"freshet-control: invalid settings: {problems}") from None


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Build the settings once, check them, set up logging and tracing, and serve until stopped.

    Exits with a message (status 1) when a required setting is missing or invalid.
    """
    settings = _settings()
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        raise SystemExit(f"freshet-control: {exc}") from None
    instance = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    provider = setup_tracing(
        "control", instance, settings.kafka_bootstrap, settings.trace_sample_ratio
    )
    # uvicorn shuts down gracefully on SIGTERM and then raises it again: ending with SystemExit
    # instead of the default action lets the spans be flushed below.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(app, host=settings.control_host, port=settings.control_port, log_config=None)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()

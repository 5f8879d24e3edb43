"""Ingest's settings (environment variables ``FRESHET_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from freshet.common.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8702, description="Port of /health and /metrics.")
    ingest_group: str = Field(default="freshet-ingest", description="Consumer group of replicas.")
    ingest_spool_dir: Path = Field(
        default=Path(".freshet/ingest-spool"),
        description="Where large streamed transactions wait for their commit, on disk.",
    )
    ingest_status_interval_s: float = 2.0
    ingest_retry_initial_s: float = 1.0
    ingest_retry_max_s: float = 30.0
    ingest_snapshot_chunk_rows: int = Field(default=20_000, ge=100)
    ingest_linger_ms: int = Field(
        default=20,
        ge=0,
        description="linger.ms of the change-event producer. On the embedded broker with "
        "single-row transactions, librdkafka's own thread used per 50k events at 5,000/s: "
        "3.2 s at 5 ms, 0.4-2.5 s at 10 ms (bimodal), 0.4-0.5 s at 20 ms, 0.3 s at 50 ms; "
        "that CPU is what the latency tail is made of on 2 shared cores. 20 ms costs about "
        "5 ms of median latency.",
    )

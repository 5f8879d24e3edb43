"""The transform worker as a real process against the real broker."""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx

from freshet.devstack.servers import free_port
from freshet.devstack.supervisor import Child, log_tail, wait_healthy
from freshet.transform.app import create_app
from freshet.transform.config import TransformSettings


def _wait_for_log(child: Child, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in child.log_path.read_text(errors="replace"):
            return True
        if not child.alive():
            return False
        time.sleep(0.2)
    return False


def test_create_app_uses_the_broker_timings_tansu_needs(tmp_path):
    settings = TransformSettings(
        kafka_bootstrap="127.0.0.1:1234",
        transform_port=18703,
        transform_data_dir=tmp_path,
        topic_partitions=5,
    )
    app = create_app(settings)
    assert app.conf.broker_session_timeout == 6
    assert app.conf.broker_heartbeat_interval == 1
    assert [str(url) for url in app.conf.broker] == ["kafka://127.0.0.1:1234"]
    assert str(app.conf.store) == "memory:"
    assert app.conf.web_port == 18703
    assert app.conf.topic_partitions == 5


def test_worker_joins_the_broker_serves_health_and_metrics_and_stops_cleanly(
    kafka, redis_server, tmp_path, unique
):
    port = free_port()
    env = {
        **os.environ,
        "FRESHET_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FRESHET_TRANSFORM_PORT": str(port),
        "FRESHET_TRANSFORM_GROUP": f"{unique}-transform",
        "FRESHET_TRANSFORM_DATA_DIR": str(tmp_path / "data"),
        "FRESHET_REDIS_URL": redis_server,
    }
    child = Child(
        "transform",
        [sys.executable, "-m", "freshet.transform"],
        env,
        tmp_path / "transform.log",
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
    )
    child.start()
    try:
        result = wait_healthy(child, timeout=60)
        assert result.ok, f"{result.detail}\n{log_tail(child.log_path, 60)}"
        # Healthy web server is not enough: the worker must also have joined its group.
        assert _wait_for_log(child, "[^Worker]: Ready", 60), log_tail(child.log_path, 60)

        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "views": {}, "pipelines": {}}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "python_info" in metrics.text
        # Faust's own pages would show table contents to anyone: they are off.
        assert httpx.get(f"http://127.0.0.1:{port}/router/").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/table/").status_code == 404

        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(15) == 0, log_tail(child.log_path, 60)
    finally:
        child.stop()

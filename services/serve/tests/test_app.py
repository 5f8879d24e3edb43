"""Serve as a real process against the real Redis."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx

from freshet.devstack import servers
from freshet.devstack.supervisor import Child, check_health, log_tail, wait_healthy


def _serve(tmp_path: Path, kafka_bootstrap: str, redis_url: str, target_url: str = "") -> Child:
    port = servers.free_port()
    unique = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "FRESHET_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FRESHET_SERVE_PORT": str(port),
        "FRESHET_REDIS_URL": redis_url,
        "FRESHET_TARGET_DATABASE_URL": target_url,
        "FRESHET_SERVE_GROUP": f"serve-{unique}",
        "FRESHET_SERVE_REDIS_PREFIX": f"test:{unique}",
        "FRESHET_SERVE_TARGET_SCHEMA": f"s_{unique}",
    }
    return Child(
        "serve",
        [sys.executable, "-m", "freshet.serve"],
        env,
        tmp_path / "serve.log",
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
    )


def _wait_for_status(child: Child, expected: int, timeout: float = 30) -> dict:
    assert child.health_url is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.alive(), log_tail(child.log_path, 60)
        status, _ = check_health(child.health_url)
        if status == expected:
            return httpx.get(child.health_url).json()
        time.sleep(0.2)
    raise AssertionError(f"/health never answered {expected}\n{log_tail(child.log_path, 60)}")


def test_health_metrics_and_a_clean_stop(kafka, redis_server, tmp_path):
    child = _serve(tmp_path, kafka.bootstrap, redis_server)
    child.start()
    try:
        result = wait_healthy(child, timeout=60)
        assert result.ok, f"{result.detail}\n{log_tail(child.log_path, 60)}"
        base = f"http://127.0.0.1:{child.port}"
        body = httpx.get(f"{base}/health").json()
        assert {k: body[k] for k in ("status", "redis", "postgres")} == {
            "status": "ok",
            "redis": "ok",
            "postgres": "not configured",
        }
        for path in ("/metrics", "/metrics/"):
            metrics = httpx.get(base + path)
            assert metrics.status_code == 200, path
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "python_info" in metrics.text
        # Nothing else answers without credentials: the OpenAPI document needs an API key (401,
        # or 503 while serve has not read the keys yet); there are no docs pages.
        assert httpx.get(base + "/openapi.json").status_code in (401, 503)
        for path in ("/docs", "/redoc"):
            assert httpx.get(base + path).status_code == 404, path

        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(15) == 0, log_tail(child.log_path, 60)
    finally:
        child.stop()


def test_health_is_503_while_redis_is_unreachable_and_recovers(kafka, tmp_path):
    redis_port = servers.free_port()
    child = _serve(tmp_path, kafka.bootstrap, f"redis://127.0.0.1:{redis_port}/0")
    child.start()
    redis = None
    try:
        body = _wait_for_status(child, 503)
        assert body["status"] == "unhealthy"
        assert str(redis_port) not in str(body)  # the Redis URL is not disclosed
        assert httpx.get(f"http://127.0.0.1:{child.port}/metrics").status_code == 200

        redis = servers.start_redis(redis_port, tmp_path / "redis", tmp_path / "redis.log")
        assert _wait_for_status(child, 200)["redis"] == "ok"
    finally:
        child.stop()
        if redis is not None:
            redis.stop()


def test_health_reports_the_target_database(kafka, redis_server, target_url, tmp_path):
    """503 naming PostgreSQL while the target database is unreachable, without its URL."""
    dead_port = servers.free_port()
    secret = uuid.uuid4().hex
    child = _serve(
        tmp_path,
        kafka.bootstrap,
        redis_server,
        f"postgresql+psycopg://postgres:{secret}@127.0.0.1:{dead_port}/nowhere",
    )
    child.start()
    try:
        body = _wait_for_status(child, 503)
        assert body["redis"] == "ok"
        assert body["postgres"].startswith("unreachable")
        assert secret not in str(body) and str(dead_port) not in str(body)
    finally:
        child.stop()

    live = _serve(tmp_path, kafka.bootstrap, redis_server, target_url)
    live.start()
    try:
        body = _wait_for_status(live, 200)
        assert (body["redis"], body["postgres"]) == ("ok", "ok")
    finally:
        live.stop()

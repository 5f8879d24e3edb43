"""Authentication of every endpoint, health, metrics and refusing to start without secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from pydantic import SecretStr
from starlette.routing import Mount

from freshet.common.exceptions import ConfigError
from freshet.common.secrets import SecretBox
from freshet.control.app import OPEN_PATHS, create_app
from freshet.control.config import ControlSettings
from freshet.devstack import servers


def _endpoints(app) -> list[tuple[str, str]]:
    """Every documented operation, the OpenAPI document and the mounted apps."""
    found = [
        (method.upper(), path.replace("{name}", "some_source"))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    found.append(("GET", "/openapi.json"))
    found += [("GET", route.path) for route in app.routes if isinstance(route, Mount)]
    return found


def test_the_app_has_the_expected_endpoints(client):
    endpoints = set(_endpoints(client.app))
    assert {
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/sources"),
        ("GET", "/v1/sources"),
        ("GET", "/v1/sources/some_source"),
        ("PUT", "/v1/sources/some_source"),
        ("DELETE", "/v1/sources/some_source"),
        ("POST", "/v1/views"),
        ("GET", "/v1/views"),
        ("GET", "/v1/views/some_source"),
        ("PUT", "/v1/views/some_source"),
        ("DELETE", "/v1/views/some_source"),
        ("GET", "/v1/views/some_source/wait"),
    } <= endpoints


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic dGVzdDp0ZXN0"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer  "},
    ],
    ids=["none", "wrong", "basic", "empty", "blank"],
)
def test_every_endpoint_but_health_needs_the_token(client, headers, source_body, auth):
    endpoints = [(m, p) for m, p in _endpoints(client.app) if p not in OPEN_PATHS]
    endpoints += [("GET", "/no/such/path"), ("GET", "/docs"), ("POST", "/v1/sources")]
    assert len(endpoints) >= 13
    for method, path in endpoints:
        body = source_body() if method in ("POST", "PUT") else None
        response = client.request(method, path, headers=headers, json=body)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "password" not in response.text
    # A malformed body is refused for the missing token, before it is parsed.
    response = client.post("/v1/sources", headers=headers, content=b"{not json")
    assert response.status_code == 401
    # Nothing was created without the token.
    name = source_body()["name"]
    assert client.get(f"/v1/sources/{name}", headers=auth).status_code == 404


def test_health_is_open_and_tells_nothing_else(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_with_the_token(client, auth, source_body):
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    response = client.get("/metrics", headers=auth, follow_redirects=True)
    assert response.status_code == 200
    assert "freshet_control_source_writes_total" in response.text


def test_openapi_with_the_token_and_no_docs(client, auth):
    response = client.get("/openapi.json", headers=auth)
    assert response.status_code == 200
    schema = response.json()
    assert "/v1/sources/{name}" in schema["paths"]
    assert client.get("/docs", headers=auth).status_code == 404


@pytest.mark.parametrize("missing", ["admin_token", "secret_key"])
def test_create_app_refuses_missing_secrets(kafka, missing):
    values = {"admin_token": SecretStr("t0ken"), "secret_key": SecretStr(SecretBox.generate_key())}
    values[missing] = SecretStr("")
    with pytest.raises(ConfigError, match=f"FRESHET_{missing.upper()}"):
        create_app(ControlSettings(kafka_bootstrap=kafka.bootstrap, **values))


def test_create_app_refuses_a_key_that_is_not_a_fernet_key(kafka):
    settings = ControlSettings(
        kafka_bootstrap=kafka.bootstrap,
        admin_token=SecretStr("t0ken"),
        secret_key=SecretStr("not-a-key"),
    )
    with pytest.raises(ConfigError, match="not a valid Fernet key"):
        create_app(settings)


def _env(**freshet: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env |= {f"FRESHET_{k.upper()}": v for k, v in freshet.items()}
    return env


def test_the_entry_point_serves_until_stopped(kafka, tmp_path):
    port = servers.free_port()
    token = "entry-point-token"
    env = _env(
        admin_token=token,
        secret_key=SecretBox.generate_key(),
        kafka_bootstrap=kafka.bootstrap,
        control_port=str(port),
        trace_sample_ratio="1.0",
    )
    log_path = tmp_path / "control.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "freshet.control"], env=env, stdout=log, stderr=log
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/sources").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/sources", headers=auth).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    assert "Application startup complete" in log_path.read_text()


@pytest.mark.parametrize("missing", ["ADMIN_TOKEN", "SECRET_KEY"])
def test_the_entry_point_refuses_to_start_without_secrets(missing):
    env = _env(
        admin_token="t0ken", secret_key=SecretBox.generate_key(), kafka_bootstrap="127.0.0.1:1"
    )
    env[f"FRESHET_{missing}"] = ""
    result = subprocess.run(
        [sys.executable, "-m", "freshet.control"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"FRESHET_{missing} is not set" in result.stderr

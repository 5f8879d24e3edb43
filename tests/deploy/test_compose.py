"""docker-compose.yml, the Dockerfiles and .dockerignore agree with the code they deploy.

Docker need not be installed: the files are parsed and checked against the services' settings
classes, the package layout and the collector's configuration.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr

from freshet.common import topics

SERVICES = ("ingest", "control", "transform", "serve")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a container must listen on
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    text = (repo_root / "docker-compose.yml").read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and "services" in data
    data["_text"] = text
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def published_ports(service: dict[str, Any]) -> set[int]:
    """Container ports published to the host."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def mounts(service: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    """(source, target) of every volume of a service; source is '' for anonymous volumes."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result.append((volume.get("source", ""), PurePosixPath(volume["target"])))
            continue
        parts = str(volume).split(":")
        if len(parts) == 1:
            result.append(("", PurePosixPath(parts[0])))
        else:
            result.append((parts[0], PurePosixPath(parts[1])))
    return result


def is_under(path: PurePosixPath, directory: PurePosixPath) -> bool:
    return path == directory or directory in path.parents


def test_all_four_services_are_built_from_their_dockerfiles(compose, repo_root):
    built = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert set(built) == set(SERVICES)
    for name, service in built.items():
        build = service["build"]
        assert isinstance(build, dict), f"{name}: give build a context and a dockerfile"
        assert build["context"] == ".", f"{name}: the Dockerfiles are built from the repo root"
        dockerfile = repo_root / build["context"] / build["dockerfile"]
        assert dockerfile == repo_root / "services" / name / "Dockerfile"
        assert dockerfile.is_file(), f"{dockerfile} does not exist"


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile(name, dockerfiles, freshet_services, repo_root):
    dockerfile = dockerfiles[name]
    service = freshet_services[name]

    assert dockerfile.all("FROM") == ["python:3.11-slim"]

    copied = [args.split()[0].rstrip("/") for args in dockerfile.all("COPY")]
    assert copied == ["constraints.txt", "shared", f"services/{name}"]
    for source in copied:
        assert (repo_root / source).exists(), f"{name}: COPY {source} does not exist"
    assert any(
        f"pip install --no-cache-dir -c constraints.txt ./shared ./services/{name}" in run
        for run in dockerfile.all("RUN")
    )

    # The service runs as a numeric non-root user, set after everything that needs root.
    user = dockerfile.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"{name}: USER must be a numeric non-root UID"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    keywords = [kw for kw, _ in dockerfile.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")

    env = dockerfile.env
    freshet_env = {k for k in env if k.startswith("FRESHET_")}
    assert freshet_env <= service.env_vars, (
        f"{name}: the Dockerfile sets {sorted(freshet_env - service.env_vars)}, "
        f"which {service.settings.__name__} does not read"
    )
    assert env.get(service.host_var) == ALL_INTERFACES, f"{name}: listen on all interfaces"
    port = int(env.get(service.port_var, service.default_port))
    assert dockerfile.all("EXPOSE") == [str(port)]

    healthcheck = dockerfile.exec_form("HEALTHCHECK")
    assert healthcheck[:2] == ["python", "-c"]
    assert "urllib.request" in healthcheck[2] and "/health" in healthcheck[2]
    assert service.port_var in healthcheck[2] and str(port) in healthcheck[2]
    compile(healthcheck[2], "HEALTHCHECK", "exec")

    cmd = dockerfile.exec_form("CMD")
    assert cmd == ["python", "-m", f"freshet.{name}"]
    package = repo_root / "services" / name / Path(*cmd[2].split("."))
    assert (package / "__init__.py").is_file(), f"{name}: CMD runs {cmd[2]}, not a package"
    assert (package / "__main__.py").is_file(), f"{name}: `python -m {cmd[2]}` needs __main__.py"


def test_dockerignore_keeps_local_state_out_and_sources_in(repo_root, dockerfiles):
    patterns = [
        line.strip()
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "keep .dockerignore exclusion-only"

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatch(prefix, p) for p in patterns for prefix in prefixes)

    for path in (".venv", ".git", ".freshet", ".env", "shared/freshet/__pycache__"):
        assert ignored(path), f".dockerignore must exclude {path}"
    for dockerfile in dockerfiles.values():
        for args in dockerfile.all("COPY"):
            source = args.split()[0].rstrip("/")
            assert not ignored(source), f".dockerignore excludes {source}, which is copied"
            assert not ignored(f"{source}/pyproject.toml")


@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_matches_settings(name, compose, freshet_services, dockerfiles):
    service = freshet_services[name]
    given = environment(compose["services"][name])
    unknown = {k for k in given if k.startswith("FRESHET_")} - service.env_vars
    assert not unknown, f"{name} is given {sorted(unknown)}, which it does not read"

    effective = {**dockerfiles[name].env, **given}
    missing = service.required_vars - effective.keys()
    assert not missing, f"{name} needs {sorted(missing)}"
    assert effective[service.host_var] == ALL_INTERFACES

    # Secrets come from the environment of `docker compose`, required, never written here.
    for field_name, info in service.settings.model_fields.items():
        var = service.var(field_name)
        if info.annotation is SecretStr and var in given:
            required = [m for m in INTERPOLATION.finditer(given[var]) if m.group(2) == ":?"]
            assert required, f"{name}: {var} must come from a required ${{VAR:?}} variable"


def test_services_find_kafka_redis_and_postgres(compose, freshet_services, repo_root):
    services = compose["services"]
    kafka_env = environment(services["kafka"])
    advertised = [urlsplit(u) for u in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    advertised_addresses = {u.netloc for u in advertised}
    for name in SERVICES:
        env = environment(services[name])
        service = freshet_services[name]
        bootstrap = env[service.var("kafka_bootstrap")]
        assert bootstrap == "kafka:9092"
        assert set(bootstrap.split(",")) <= advertised_addresses
        depends = services[name].get("depends_on", {})
        assert depends.get("kafka", {}).get("condition") == "service_healthy"
        if "redis_url" in service.settings.model_fields:
            redis = urlsplit(env[service.var("redis_url")])
            assert redis.scheme == "redis" and redis.hostname in services
            assert depends.get(redis.hostname, {}).get("condition") == "service_healthy"

    serve = freshet_services["serve"]
    target = urlsplit(
        INTERPOLATION.sub("x", environment(services["serve"])[serve.var("target_database_url")])
    )
    assert target.scheme.startswith("postgresql") and target.hostname == "postgres"
    assert services["serve"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    database = target.path.lstrip("/")
    postgres_env = environment(services["postgres"])
    init_sql = "".join(
        (repo_root / source).read_text()
        for source, dest in mounts(services["postgres"])
        if str(dest).startswith("/docker-entrypoint-initdb.d/")
    )
    assert database == postgres_env.get("POSTGRES_DB") or re.search(
        rf"CREATE DATABASE {database}\b", init_sql
    ), f"nothing creates serve's target database {database}"


def test_published_ports(compose, freshet_services, dockerfiles):
    for name, port in (("control", 8700), ("serve", 8701)):
        service = freshet_services[name]
        effective = {**dockerfiles[name].env, **environment(compose["services"][name])}
        assert int(effective.get(service.port_var, service.default_port)) == port
        assert port in published_ports(compose["services"][name])


def test_depends_on_and_healthchecks(compose, dockerfiles):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec.get("condition") == "service_healthy":
                has_check = "healthcheck" in services[target] or (
                    target in dockerfiles and dockerfiles[target].all("HEALTHCHECK")
                )
                assert has_check, f"{name} waits for {target} to be healthy; it has no check"
    for name in ("kafka", "postgres", "redis", "connect"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck"


def test_volumes_and_writable_paths(compose, repo_root, freshet_services, dockerfiles):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for source, _ in mounts(service):
            if source.startswith((".", "/")):
                assert (repo_root / source).exists(), f"{name} mounts missing {source}"
            elif source:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"

    for name in SERVICES:
        service = compose["services"][name]
        assert service.get("read_only") is True, f"{name}: read-only root filesystem"
        writable = [target for _, target in mounts(service)]
        writable += [PurePosixPath(t.split(":")[0]) for t in service.get("tmpfs", [])]
        effective = {**dockerfiles[name].env, **environment(service)}
        for var, default in freshet_services[name].path_fields().items():
            path = PurePosixPath(effective.get(var, str(default)))
            path = dockerfiles[name].workdir / path  # a relative path is under WORKDIR
            assert any(is_under(path, w) for w in writable), (
                f"{name} writes {var}={path}, which is on the read-only root filesystem"
            )


def test_kafka_runs_kraft(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controllers = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {urlsplit(u).scheme.upper(): urlsplit(u) for u in env["KAFKA_LISTENERS"].split(",")}
    assert set(listeners) <= set(protocols)
    assert set(controllers) <= set(listeners)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    advertised = {urlsplit(u).scheme.upper() for u in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert advertised <= set(listeners) - set(controllers)
    voter_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == node_id
    assert voter == f"kafka:{listeners[controllers[0]].port}"
    # One broker: internal topics cannot be replicated more than once.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    log_dirs = PurePosixPath(env["KAFKA_LOG_DIRS"])
    assert any(src and dest == log_dirs for src, dest in mounts(kafka)), "keep Kafka's data"


def test_postgres_has_logical_replication(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"].split(":")[1].startswith("15")
    command = command_text(postgres)
    assert command.startswith("postgres ")
    settings = dict(re.findall(r"-c (\w+)=(\S+)", command))
    assert settings["wal_level"] == "logical"
    assert int(settings["max_replication_slots"]) > 0
    assert int(settings["max_wal_senders"]) > 0
    assert int(settings["max_slot_wal_keep_size"]) > 0, "an idle slot must not keep WAL forever"


def test_mariadb_has_row_binlog(compose):
    command = command_text(compose["services"]["mariadb"])
    for option in ("--log-bin", "--binlog-format=ROW", "--binlog-row-image=FULL"):
        assert option in command
    assert "--binlog-row-metadata=FULL" in command
    assert re.search(r"--server-id=[1-9]", command)


def test_redis_is_durable(compose):
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert "--appendonly yes" in command_text(redis)
    assert any(src and dest == PurePosixPath("/data") for src, dest in mounts(redis))


def test_kafka_connect_with_debezium(compose):
    connect = compose["services"]["connect"]
    assert connect["image"].startswith("quay.io/debezium/connect:")
    env = environment(connect)
    assert env["BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["GROUP_ID"]
    storage = [env[f"{kind}_STORAGE_TOPIC"] for kind in ("CONFIG", "OFFSET", "STATUS")]
    assert all(storage) and len(set(storage)) == 3
    for kind in ("CONFIG", "OFFSET", "STATUS"):
        assert env[f"{kind}_STORAGE_REPLICATION_FACTOR"] == "1"  # one broker
    assert connect["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_otel_collector_reads_the_span_topic(compose, repo_root):
    collector = compose["services"]["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    config_arg = re.search(r"--config=(\S+)", command_text(collector))
    assert config_arg, "give the collector its --config"
    sources = [src for src, dest in mounts(collector) if str(dest) == config_arg.group(1)]
    assert sources == ["./deploy/otel-collector.yaml"]
    config = yaml.safe_load((repo_root / sources[0]).read_text())

    kafka = config["receivers"]["kafka"]
    assert "kafka:9092" in kafka["brokers"]
    assert "topic" not in kafka and "encoding" not in kafka, "removed legacy keys"
    assert kafka["traces"]["topics"] == [topics.SPANS]
    assert kafka["traces"]["encoding"] == "otlp_proto"
    assert "otlp" in config["receivers"]
    assert "debug" in config["exporters"]

    pipelines = config["service"]["pipelines"]
    traces = pipelines["traces"]
    assert {"kafka", "otlp"} <= set(traces["receivers"])
    assert "debug" in traces["exporters"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            undefined = set(pipeline.get(kind, [])) - set(config.get(kind) or {})
            assert not undefined, f"pipeline uses undefined {kind} {sorted(undefined)}"


def test_env_example_documents_every_required_variable(compose, repo_root):
    referenced = {m.group(1) for m in INTERPOLATION.finditer(compose["_text"])}
    required = {
        m.group(1) for m in INTERPOLATION.finditer(compose["_text"]) if m.group(2) in (None, ":?")
    }
    example = {}
    for line in (repo_root / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            example[key.strip()] = value.strip()
    assert required, "the secrets must be required variables"
    assert required <= example.keys(), f"undocumented: {sorted(required - example.keys())}"
    assert example.keys() <= referenced, f"unused: {sorted(example.keys() - referenced)}"
    for key, value in example.items():
        assert "replace" in value.lower(), f".env.example: {key} must be an obvious placeholder"

"""What the deployment checks share: the repository, the services' settings and Dockerfiles.

The settings classes are imported, not copied: a variable that a deployment file sets must be a
field the service really reads, so renaming a field makes these tests fail.
"""

from __future__ import annotations

import importlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]

SETTINGS_CLASSES = {
    "ingest": "freshet.ingest.config:IngestSettings",
    "control": "freshet.control.config:ControlSettings",
    "transform": "freshet.transform.config:TransformSettings",
    "serve": "freshet.serve.config:ServeSettings",
}

# Settings a deployment must give each service (fields, not variable names, so that a renamed
# field fails the lookup in ServiceInfo.var instead of silently passing).
REQUIRED_FIELDS = {
    "ingest": ("kafka_bootstrap", "secret_key"),
    "control": ("kafka_bootstrap", "secret_key", "admin_token"),
    "transform": ("kafka_bootstrap", "secret_key", "redis_url"),
    "serve": ("kafka_bootstrap", "secret_key", "redis_url", "target_database_url"),
}


@dataclass(frozen=True)
class ServiceInfo:
    """One Freshet service as its settings class describes it."""

    name: str
    settings: type[BaseSettings]

    def var(self, field_name: str) -> str:
        """The environment variable of a settings field (``FRESHET_`` + the field name)."""
        assert field_name in self.settings.model_fields, (
            f"{self.settings.__name__} has no field {field_name!r}"
        )
        prefix = self.settings.model_config.get("env_prefix", "")
        return (prefix + field_name).upper()

    @property
    def env_vars(self) -> frozenset[str]:
        """Every environment variable the settings class reads."""
        return frozenset(self.var(name) for name in self.settings.model_fields)

    @property
    def required_vars(self) -> frozenset[str]:
        return frozenset(self.var(name) for name in REQUIRED_FIELDS[self.name])

    @property
    def host_var(self) -> str:
        return self.var(f"{self.name}_host")

    @property
    def port_var(self) -> str:
        return self.var(f"{self.name}_port")

    @property
    def default_port(self) -> int:
        return int(self.settings.model_fields[f"{self.name}_port"].default)

    def path_fields(self) -> dict[str, PurePosixPath]:
        """Variable -> default of every field typed ``Path`` (directories the service writes)."""
        return {
            self.var(name): PurePosixPath(info.default)
            for name, info in self.settings.model_fields.items()
            if info.annotation is Path
        }


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile that the checks need (one stage)."""

    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"{self.path} has no {keyword}"
        return found[-1]

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"{self.path}: use ENV KEY=VALUE, not {args!r}"
                env[key] = value
        return env

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON (exec) form of CMD or of HEALTHCHECK's CMD."""
        args = self.last(keyword)
        if keyword == "HEALTHCHECK":
            args = args[args.index("CMD") + len("CMD") :]
        value = json.loads(args)
        assert isinstance(value, list), f"{self.path}: {keyword} must be in exec (JSON) form"
        return value

    @property
    def workdir(self) -> PurePosixPath:
        return PurePosixPath(self.last("WORKDIR"))


def parse_dockerfile(path: Path) -> Dockerfile:
    result = Dockerfile(path)
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        result.instructions.append((keyword.upper(), args.strip()))
        logical = ""
    assert not logical, f"{path} ends inside a continued line"
    return result


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def freshet_services() -> dict[str, ServiceInfo]:
    services = {}
    for name, target in SETTINGS_CLASSES.items():
        module, _, cls = target.partition(":")
        services[name] = ServiceInfo(name, getattr(importlib.import_module(module), cls))
    return services


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, Dockerfile]:
    return {
        name: parse_dockerfile(ROOT / "services" / name / "Dockerfile") for name in SETTINGS_CLASSES
    }

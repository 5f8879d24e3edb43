"""``python -m freshet.control.cli``: manage pipelines from YAML (or JSON) files.

Usage::

    python -m freshet.control.cli pipeline validate FILE.yaml [--offline]
    python -m freshet.control.cli pipeline apply FILE.yaml

The file holds one pipeline, ``{name, nodes}`` as ``POST /v1/pipelines`` takes it. ``validate``
asks control (``POST /v1/pipelines/validate``) to check it against the captured tables and
prints each node's output fields, or every problem with its node, attribute, line and column;
``--offline`` only checks the file's structure, without control. ``apply`` creates the pipeline,
or replaces it when it exists. A mask node may name an environment variable holding its salt
with ``salt_env: NAME`` instead of writing the salt in the file.

Control is reached at ``FRESHET_CONTROL_URL`` (default ``http://127.0.0.1:8700``) with the
bearer token ``FRESHET_ADMIN_TOKEN``. Exit status: 0 done, 1 refused, 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from freshet.common.pipelines import PipelineSpec


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRESHET_", frozen=True, extra="ignore")

    control_url: str = "http://127.0.0.1:8700"
    admin_token: SecretStr = Field(default=SecretStr(""))


class Transport(Protocol):
    """One HTTP exchange with control: ``(status, decoded JSON body or None)``."""

    def __call__(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> tuple[int, Any]: ...


class UsageError(Exception):
    """The command line or the file is wrong; the message says how."""


def http_transport(settings: CliSettings, timeout: float = 30.0) -> Transport:
    """A transport over ``urllib`` to ``settings.control_url`` with the admin token."""
    token = settings.admin_token.get_secret_value()
    if not token:
        raise UsageError("FRESHET_ADMIN_TOKEN is not set: control answers nothing without it")
    base = settings.control_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"FRESHET_CONTROL_URL must be an http(s) URL, not {base!r}")

    def exchange(method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        except urllib.error.URLError as exc:
            raise UsageError(f"control at {base} cannot be reached: {exc.reason}") from None
        return status, json.loads(raw) if raw else None

    return exchange


class _Yaml12Loader(yaml.SafeLoader):
    """YAML's safe loader with YAML 1.2 booleans (only true and false).

    YAML 1.1 reads on/off/yes/no as booleans: a lookup's ``on:`` key must stay ``"on"``.
    """


_BOOL = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The pipeline in ``path`` (YAML or JSON), with ``salt_env`` replaced by the salt.

    Raises:
        UsageError: the file cannot be read or is not one pipeline.
    """
    try:
        document = yaml.load(path.read_text(), Loader=_Yaml12Loader)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise UsageError(f"{path} must hold one pipeline: a mapping with 'name' and 'nodes'")
    for node in document["nodes"]:
        if isinstance(node, dict) and "salt_env" in node:
            variable = node.pop("salt_env")
            salt = environ.get(str(variable))
            if not salt:
                raise UsageError(
                    f"node {node.get('id')!r}: the environment variable {variable} (salt_env) "
                    "is not set"
                )
            node["salt"] = salt
    return document


def _problems(body: Any) -> list[str]:
    detail = body.get("detail") if isinstance(body, dict) else body
    if not isinstance(detail, list):
        return [str(detail)]
    lines = []
    for entry in detail:
        where = ".".join(str(p) for p in entry.get("loc", [])[1:])
        if entry.get("node"):
            where = f"node {entry['node']} ({where})"
        at = ""
        if entry.get("line") is not None:
            at = f" [line {entry['line']}, column {entry['column']}]"
        lines.append(f"{where}: {entry.get('msg')}{at}")
    return lines


def validate(
    document: dict[str, Any], transport: Transport | None, out: Callable[[str], None]
) -> int:
    if transport is None:
        try:
            PipelineSpec.model_validate({**document, "generation": 1})
        except ValidationError as exc:
            for error in exc.errors(include_input=False):
                out(f"{'.'.join(map(str, error['loc']))}: {error['msg']}")
            return 1
        out(
            f"pipeline {document.get('name')}: the file's structure is valid (not checked "
            "against the captured tables)"
        )
        return 0
    status, body = transport("POST", "/v1/pipelines/validate", document)
    if status != 200:
        for line in _problems(body):
            out(line)
        return 1
    for node, fields in body["nodes"].items():
        out(f"{node}: " + ", ".join(f"{name} {type_}" for name, type_ in fields.items()))
    return 0


def apply(document: dict[str, Any], transport: Transport, out: Callable[[str], None]) -> int:
    name = document.get("name")
    if not isinstance(name, str):
        raise UsageError("the pipeline has no 'name'")
    status, _ = transport("GET", f"/v1/pipelines/{name}", None)
    if status == 404:
        status, body = transport("POST", "/v1/pipelines", document)
        verb = "created"
    elif status == 200:
        status, body = transport("PUT", f"/v1/pipelines/{name}", document)
        verb = "replaced"
    else:
        out(f"control answered {status} for pipeline {name}")
        return 1
    if status not in (200, 201):
        for line in _problems(body):
            out(line)
        return 1
    out(f"pipeline {name} {verb} (generation {body['generation']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freshet.control.cli")
    kinds = parser.add_subparsers(dest="kind", required=True)
    pipeline = kinds.add_parser("pipeline", help="validate or apply a pipeline file")
    actions = pipeline.add_subparsers(dest="action", required=True)
    check = actions.add_parser("validate", help="check a pipeline (with control unless --offline)")
    check.add_argument("file", type=Path)
    check.add_argument("--offline", action="store_true", help="check the structure only")
    put = actions.add_parser("apply", help="create or replace a pipeline")
    put.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        document = load(args.file, os.environ)
        settings = CliSettings()
        if args.action == "validate":
            transport = None if args.offline else http_transport(settings)
            return validate(document, transport, print)
        return apply(document, http_transport(settings), print)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

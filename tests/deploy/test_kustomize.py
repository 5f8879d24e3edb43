"""The Kubernetes manifests under deploy/kustomize are valid, hardened and match the code.

Every object is validated against the Kubernetes JSON schemas shipped with ``kubernetes-validate``
(strict: unknown fields fail). The variables each container gets are checked against its
service's settings class. When ``kubectl`` is installed, the base and the opt-in components are
also rendered with ``kubectl kustomize``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
BASE = KUSTOMIZE / "base"
HPA = KUSTOMIZE / "components" / "hpa"
SECRET_NAME = "freshet-secrets"
RUN_AS_USER = 10001
# The oldest Kubernetes release the manifests must work on, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", latest_version())
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a container must listen on
TMP = PurePosixPath("/tmp")  # noqa: S108 - the emptyDir that replaces the read-only /tmp


def load_manifests(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    objects = []
    for path in sorted(directory.rglob("*.y*ml")):
        if path.name in KUSTOMIZATION_FILES:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                objects.append((path, doc))
    return objects


ALL_OBJECTS = load_manifests(KUSTOMIZE)
BASE_OBJECTS = [obj for path, obj in ALL_OBJECTS if path.parent == BASE]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


DEPLOYMENTS = of_kind(BASE_OBJECTS, "Deployment")
SERVICES = of_kind(BASE_OBJECTS, "Service")
CONFIGMAPS = of_kind(BASE_OBJECTS, "ConfigMap")


def component(deployment: dict[str, Any]) -> str:
    return deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per Freshet pod"
    return containers[0]


def secret_example() -> dict[str, str]:
    values = {}
    for line in (BASE / "secrets.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variable name -> its env entry, including the keys of envFrom ConfigMaps."""
    ctr = container(deployment)
    env: dict[str, dict[str, Any]] = {}
    for source in ctr.get("envFrom", []):
        assert "secretRef" not in source, "take secrets key by key (secretKeyRef), not whole"
        name = source["configMapRef"]["name"]
        assert name in CONFIGMAPS, f"envFrom names unknown ConfigMap {name}"
        prefix = source.get("prefix", "")
        for key, value in CONFIGMAPS[name]["data"].items():
            env[prefix + key] = {"name": prefix + key, "value": value, "from": name}
    for entry in ctr.get("env", []):
        env[entry["name"]] = entry
    return env


def cpu(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(quantity: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, f"cannot read memory quantity {quantity!r}"
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


def is_under(path: PurePosixPath, directory: PurePosixPath) -> bool:
    return path == directory or directory in path.parents


deployment_params = pytest.mark.parametrize("name", sorted(DEPLOYMENTS))


def test_the_base_deploys_all_four_services(freshet_services):
    assert {component(d) for d in DEPLOYMENTS.values()} == set(freshet_services)
    assert len(DEPLOYMENTS) == len(freshet_services)


@pytest.mark.parametrize(
    ("path", "obj"),
    ALL_OBJECTS,
    ids=[
        f"{p.relative_to(KUSTOMIZE)}:{o.get('kind')}/{o['metadata']['name']}"
        for p, o in ALL_OBJECTS
    ],
)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(path, obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{path.relative_to(ROOT)}: {obj['kind']} is invalid for {version}: {exc}")


def test_no_secret_values_are_committed():
    assert not [o for _, o in ALL_OBJECTS if o["kind"] == "Secret"], "create the Secret instead"
    for path in KUSTOMIZE.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(path.read_text()), path
    for key, value in secret_example().items():
        assert "replace-me" in value, f"secrets.env.example: {key} must be a placeholder"


@pytest.mark.parametrize(
    "path", sorted(KUSTOMIZE.rglob("kustomization.yaml")), ids=lambda p: str(p.parent.name)
)
def test_kustomization_lists_exactly_its_files(path):
    kustomization = yaml.safe_load(path.read_text())
    directory = path.parent
    assert kustomization["kind"] in ("Kustomization", "Component")
    listed = set()
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        target = directory / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), (
            f"{path.relative_to(ROOT)} lists {entry}, which does not exist"
        )
        listed.add(target.resolve())
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            target = directory / patch["path"]
            assert target.is_file(), f"{path.relative_to(ROOT)}: missing patch {patch['path']}"
            listed.add(target.resolve())
    manifests = {p.resolve() for p in directory.glob("*.y*ml") if p.name not in KUSTOMIZATION_FILES}
    assert manifests <= listed, f"not in {path.relative_to(ROOT)}: {sorted(manifests - listed)}"


@deployment_params
def test_deployment_runs_hardened_as_non_root(name, dockerfiles):
    deployment = DEPLOYMENTS[name]
    pod = deployment["spec"]["template"]["spec"]
    ctr = container(deployment)
    pod_ctx, ctr_ctx = pod.get("securityContext", {}), ctr.get("securityContext", {})
    assert {**pod_ctx, **ctr_ctx}.get("runAsNonRoot") is True
    assert {**pod_ctx, **ctr_ctx}.get("runAsUser") == RUN_AS_USER
    uid = dockerfiles[component(deployment)].last("USER").split(":")[0]
    assert int(uid) == RUN_AS_USER, "the image's USER and the manifests' runAsUser differ"
    assert ctr_ctx.get("allowPrivilegeEscalation") is False
    assert ctr_ctx.get("readOnlyRootFilesystem") is True
    assert ctr_ctx.get("capabilities", {}).get("drop") == ["ALL"]
    assert not ctr_ctx.get("capabilities", {}).get("add")
    assert not ctr_ctx.get("privileged")
    assert pod.get("automountServiceAccountToken") is False
    # Service links would set FRESHET_<NAME>_PORT=tcp://... for the Service freshet-<name>.
    assert pod.get("enableServiceLinks") is False


@deployment_params
def test_deployment_has_probes_and_resources(name, freshet_services, dockerfiles):
    deployment = DEPLOYMENTS[name]
    service = freshet_services[component(deployment)]
    ctr = container(deployment)
    env = env_of(deployment)
    port = int(env[service.port_var]["value"]) if service.port_var in env else service.default_port
    assert dockerfiles[service.name].all("EXPOSE") == [str(port)]
    ports = {p.get("name"): p["containerPort"] for p in ctr["ports"]}
    assert list(ports.values()) == [port]

    for probe in ("livenessProbe", "readinessProbe"):
        assert probe in ctr, f"{name} has no {probe}"
        http = ctr[probe]["httpGet"]
        assert http["path"] == "/health"
        assert ports.get(http["port"], http["port"]) == port, f"{name}: {probe} on a wrong port"

    resources = ctr["resources"]
    for kind in ("cpu", "memory"):
        measure = cpu if kind == "cpu" else memory
        assert kind in resources["requests"] and kind in resources["limits"], f"{name}: {kind}"
        assert measure(resources["requests"][kind]) <= measure(resources["limits"][kind])


@deployment_params
def test_deployment_env_is_read_by_its_settings(name, freshet_services):
    deployment = DEPLOYMENTS[name]
    service = freshet_services[component(deployment)]
    env = env_of(deployment)
    unknown = {var for var in env if var.startswith("FRESHET_")} - service.env_vars
    assert not unknown, f"{name} is given {sorted(unknown)}, which {service.name} does not read"
    assert not {var for var in env if not var.startswith("FRESHET_")}, "only FRESHET_* settings"
    missing = service.required_vars - env.keys()
    assert not missing, f"{name} needs {sorted(missing)}"
    assert env[service.host_var].get("value") == ALL_INTERFACES

    secrets = secret_example()
    for field_name, info in service.settings.model_fields.items():
        var = service.var(field_name)
        if var not in env:
            continue
        value_from = env[var].get("valueFrom", {})
        if info.annotation is SecretStr:
            ref = value_from.get("secretKeyRef")
            assert ref, f"{name}: the secret {var} must come from the Secret"
            assert ref["name"] == SECRET_NAME and ref["key"] in secrets
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            assert ref["key"] in CONFIGMAPS[ref["name"]]["data"], f"{name}: {ref} does not exist"


def test_secret_template_lists_exactly_the_keys_used():
    used = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for deployment in DEPLOYMENTS.values()
        for entry in container(deployment).get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert used == set(secret_example())


@deployment_params
def test_paths_the_service_writes_are_writable(name, freshet_services, dockerfiles):
    deployment = DEPLOYMENTS[name]
    service = freshet_services[component(deployment)]
    pod = deployment["spec"]["template"]["spec"]
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    writable = [
        PurePosixPath(m["mountPath"])
        for m in container(deployment).get("volumeMounts", [])
        if m["name"] in empty_dirs
    ]
    assert TMP in writable, f"{name}: mount an emptyDir at /tmp"
    env = env_of(deployment)
    workdir = dockerfiles[service.name].workdir
    for var, default in service.path_fields().items():
        path = workdir / PurePosixPath(env[var]["value"] if var in env else str(default))
        assert any(is_under(path, w) for w in writable), (
            f"{name} writes {var}={path} on its read-only root filesystem: mount an emptyDir"
        )
    if service.name == "ingest":
        assert service.var("ingest_spool_dir") in env, "set the spool dir explicitly"


@deployment_params
def test_service_selects_its_deployment(name, freshet_services):
    deployment = DEPLOYMENTS[name]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template_labels.items()
    for labels in (deployment["metadata"]["labels"], template_labels):
        assert all(labels.get(label) for label in LABELS), f"{name} needs {LABELS}"
    assert template_labels["app.kubernetes.io/part-of"] == "freshet"

    services = [
        s for s in SERVICES.values() if s["spec"]["selector"].items() <= template_labels.items()
    ]
    assert len(services) == 1, f"{name} needs exactly one Service"
    service = services[0]
    assert all(service["metadata"]["labels"].get(label) for label in LABELS)
    others = [
        d
        for d in DEPLOYMENTS.values()
        if d is not deployment
        and service["spec"]["selector"].items()
        <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert not others, f"Service {service['metadata']['name']} also selects other Deployments"
    ports = {p.get("name"): p["containerPort"] for p in container(deployment)["ports"]}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in ports or target in ports.values(), f"{target} is not a container port"


@deployment_params
def test_image_is_the_one_compose_builds(name, repo_root):
    deployment = DEPLOYMENTS[name]
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    image = container(deployment)["image"]
    assert image == compose["services"][component(deployment)]["image"]
    assert container(deployment)["name"] == component(deployment)


def test_hpa_component_targets_scalable_deployments():
    component_objects = [o for p, o in ALL_OBJECTS if p.parent == HPA]
    hpas = of_kind(component_objects, "HorizontalPodAutoscaler")
    assert {component(DEPLOYMENTS[h["spec"]["scaleTargetRef"]["name"]]) for h in hpas.values()} == {
        "transform",
        "serve",
    }
    partitions = int(CONFIGMAPS["freshet-common"]["data"]["FRESHET_TOPIC_PARTITIONS"])
    for hpa in hpas.values():
        spec = hpa["spec"]
        target = DEPLOYMENTS[spec["scaleTargetRef"]["name"]]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= partitions, (
            "a consumer group cannot use more replicas than partitions"
        )
        if any(m["resource"]["name"] == "cpu" for m in spec["metrics"]):
            assert "cpu" in container(target)["resources"]["requests"]


KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@needs_kubectl
def test_base_renders_with_kustomize():
    rendered = {(o["kind"], o["metadata"]["name"]) for o in kustomize(BASE)}
    assert rendered == {(o["kind"], o["metadata"]["name"]) for o in BASE_OBJECTS}


@needs_kubectl
def test_hpa_component_renders_on_the_base(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(BASE, overlay)],
                "components": [os.path.relpath(HPA, overlay)],
            }
        )
    )
    rendered = kustomize(overlay)
    for obj in rendered:
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
    deployments = of_kind(rendered, "Deployment")
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind(rendered, "HorizontalPodAutoscaler").values()
    }
    assert scaled == {"freshet-transform", "freshet-serve"}
    for name, deployment in deployments.items():
        # kubectl apply would otherwise reset the autoscaler's choice to the manifest's replicas.
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name

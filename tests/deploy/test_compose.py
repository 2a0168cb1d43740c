"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine
here): every command, port and TASKGATE_* variable they name exists in the code,
health gates the start order, and no secret is baked into an image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

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

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = {"server": "server", "processor": "server.processor", "gateway": "gateway"}
# One-shot services: the others wait for them to finish.
ONE_SHOT = {"migrate", "certs"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def test_the_compose_file_matches_the_compose_spec() -> None:
    checker = shutil.which("check-jsonschema", path=str(Path(ROOT / ".venv" / "bin")))
    checker = checker or shutil.which("check-jsonschema")
    assert checker is not None, "check-jsonschema is a dev dependency"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_of_the_stack_is_there() -> None:
    assert set(services()) == {
        "postgres", "postgres-replica", "redis", "migrate", "certs", "server", "processor",
        "gateway", "prometheus", "grafana", "jaeger",
    }  # fmt: skip


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_exports_traces_to_jaeger(service: str) -> None:
    environment = services()[service]["environment"]
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert environment["OTEL_TRACES_SAMPLER"].startswith("${OTEL_TRACES_SAMPLER:-parentbased_")
    assert "4317" not in " ".join(services()["jaeger"].get("ports", []))  # not published
    assert "--enable-feature=exemplar-storage" in services()["prometheus"]["command"]


@pytest.mark.parametrize(("service", "module"), APP_SERVICES.items())
def test_each_app_service_runs_a_module_of_the_code(service: str, module: str) -> None:
    command = services()[service]["command"]
    assert runnable_module(command) == module


def test_every_taskgate_variable_named_exists_in_the_code() -> None:
    named = variables_in(COMPOSE_FILE.read_text()) | variables_in(DOCKERFILE.read_text())
    assert named, "the deployment files name no TASKGATE_ variable"
    assert named - taskgate_variables() == set()


def _environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in services()[service].get("environment", {}).items()}


def test_published_and_scraped_ports_are_the_ones_the_processes_listen_on() -> None:
    server, processor, gateway = (_environment(s) for s in ("server", "processor", "gateway"))
    assert port_of(server["TASKGATE_GRPC_ADDR"]) == default_ports()["TASKGATE_GRPC_ADDR"]
    assert "50051:50051" in services()["server"]["ports"]
    assert port_of(gateway["TASKGATE_GATEWAY_ADDR"]) == 8080
    assert "8080:8080" in services()["gateway"]["ports"]
    assert gateway["TASKGATE_GATEWAY_UPSTREAM"] == f"server:{port_of(server['TASKGATE_GRPC_ADDR'])}"
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["server"]["static_configs"][0]["targets"] == [
        f"server:{port_of(server['TASKGATE_SERVER_METRICS_ADDR'])}"
    ]
    assert jobs["gateway"]["static_configs"][0]["targets"] == [
        f"gateway:{port_of(gateway['TASKGATE_GATEWAY_METRICS_ADDR'])}"
    ]
    dns = jobs["processor"]["dns_sd_configs"][0]
    assert dns["names"] == ["processor"]
    assert dns["port"] == port_of(processor["TASKGATE_PROCESSOR_METRICS_ADDR"])
    # The processor's healthcheck asks its own metrics port.
    assert f":{dns['port']}/metrics" in " ".join(services()["processor"]["healthcheck"]["test"])


def test_start_order_is_gated_on_health() -> None:
    for name, service in services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition["condition"] == wanted, (name, dependency)
            dep = services()[dependency]
            assert dependency in APP_SERVICES or "healthcheck" in dep or dependency in ONE_SHOT
    assert "migrate" in services()["server"]["depends_on"]
    assert "migrate" in services()["processor"]["depends_on"]


def _mounted_file(service: str, path: str) -> str:
    """The volume holding ``path`` in ``service``'s container (and the path inside it)."""
    for mount in services()[service].get("volumes", []):
        if isinstance(mount, dict) and path.startswith(mount["target"] + "/"):
            return f"{mount['source']}:{path.removeprefix(mount['target'])}"
    raise AssertionError(f"{service}: nothing mounted holds {path}")


def test_the_server_speaks_tls_and_the_gateway_verifies_it_with_the_ca_that_signed_it() -> None:
    server, gateway = _environment("server"), _environment("gateway")
    certs = services()["certs"]
    assert runnable_module(certs["command"]) == "devstack.certs"
    (made,) = certs["volumes"]
    folder = certs["command"][3]
    assert made["target"] == folder
    # The files devstack.certs writes, as the processes find them in the shared volume.
    assert _mounted_file("server", server["TASKGATE_TLS_CERT_FILE"]) == "certs:/server/tls.crt"
    assert _mounted_file("server", server["TASKGATE_TLS_KEY_FILE"]) == "certs:/server/tls.key"
    assert _mounted_file("gateway", gateway["TASKGATE_GATEWAY_UPSTREAM_CA_FILE"]) == (
        "certs:/gateway/ca.crt"
    )
    assert _mounted_file("gateway", gateway["TASKGATE_GATEWAY_UPSTREAM_CERT_FILE"]) == (
        "certs:/gateway/tls.crt"
    )
    # The gateway dials "server": a name in the server's certificate.
    assert gateway["TASKGATE_GATEWAY_UPSTREAM"].partition(":")[0] == "server"
    for mount in services()["server"]["volumes"] + services()["gateway"]["volumes"]:
        assert mount["read_only"] is True
    # The image's HEALTHCHECK asks the plaintext health port, which is not published.
    health_port = port_of(server["TASKGATE_GRPC_HEALTH_ADDR"])
    assert all(str(health_port) not in p for p in services()["server"]["ports"])


def test_the_processor_scales() -> None:
    processor = services()["processor"]
    # A fixed name, a published port or a single replica would stop --scale.
    assert "container_name" not in processor
    assert "ports" not in processor
    assert "deploy" not in processor or "replicas" not in processor["deploy"]


def test_state_lives_in_named_volumes_and_monitoring_is_mounted() -> None:
    declared = set(compose()["volumes"])
    for name in ("postgres", "redis", "prometheus", "grafana"):
        mounts = services()[name]["volumes"]
        named = {m.split(":")[0] for m in mounts if not m.startswith(".")}
        assert named, name
        assert named <= declared, name
    assert "./monitoring:/etc/prometheus:ro" in services()["prometheus"]["volumes"]
    grafana = services()["grafana"]["volumes"]
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana


def test_no_password_is_written_into_the_compose_file_without_an_override() -> None:
    text = COMPOSE_FILE.read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD:\s", line) or "postgresql://" in line:
            assert "${" in line, line


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_the_image_runs_as_non_root_with_a_healthcheck_and_no_secret() -> None:
    final = _final_stage()
    users = [rest for word, rest in final if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    (healthcheck,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    probe = yaml.safe_load(healthcheck.partition(" CMD ")[2])
    assert runnable_module(probe) == "server.healthcheck"
    assert yaml.safe_load(next(rest for word, rest in final if word == "CMD")) == [
        "python",
        "-m",
        "server",
    ]
    env = " ".join(rest for word, rest in _dockerfile_instructions() if word in {"ENV", "ARG"})
    for secret in ("TASKGATE_DATABASE_URL", "TASKGATE_REDIS_URL", "PASSWORD", "SECRET", "TOKEN"):
        assert secret not in env


def test_the_image_holds_every_package_and_exposes_the_default_ports() -> None:
    copied = " ".join(rest for word, rest in _dockerfile_instructions() if word == "COPY")
    for package in ("server/", "gateway/", "gen/"):
        assert package in copied
    exposed = {int(p) for word, rest in _final_stage() if word == "EXPOSE" for p in rest.split()}
    assert exposed == set(default_ports().values())
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "server" not in ignored
    assert "gateway" not in ignored


def test_the_server_reads_from_a_streaming_replica_of_postgres() -> None:
    replica = services()["postgres-replica"]
    script = replica["command"][0]
    assert "pg_basebackup --host=postgres" in script
    assert "--write-recovery-conf" in script
    assert "exec gosu postgres postgres" in script
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    urls = services()["server"]["environment"]["TASKGATE_DATABASE_REPLICA_URLS"]
    assert urls.startswith("postgresql://")
    assert "@postgres-replica:5432/taskgate" in urls
    mounts = services()["postgres"]["volumes"]
    assert any(m.endswith(":/docker-entrypoint-initdb.d/allow-replication.sh:ro") for m in mounts)
    assert "host replication" in (ROOT / "deploy/compose/allow-replication.sh").read_text()

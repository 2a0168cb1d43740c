"""What the code offers a deployment: its TASKGATE_* variables, the modules
``python -m`` runs, and the default ports. The deployment files (Dockerfile,
docker-compose.yml, deploy/k8s) are checked against these."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields

from gateway.config import Settings as GatewaySettings
from server.config import Settings as ServerSettings
from server.config import parse_addr
from tests.support.monitoring import ROOT

CONFIG_MODULES = (ROOT / "server" / "config.py", ROOT / "gateway" / "config.py")
# env.get("NAME", ...), env.positive("NAME", ...), count("NAME", ...), get("GATEWAY_ADDR", ...)
_READ = re.compile(r"\b(?:get|cast|positive|count|duration)\(\s*\"([A-Z][A-Z0-9_]*)\"")
_VARIABLE = re.compile(r"\bTASKGATE_[A-Z0-9_]+\b")
# The processes a deployment runs, by module.
MODULES = ("server", "server.processor", "gateway")


def taskgate_variables() -> set[str]:
    """Every TASKGATE_* variable the server and gateway settings read."""
    names: set[str] = set()
    for path in CONFIG_MODULES:
        names |= {f"TASKGATE_{name}" for name in _READ.findall(path.read_text())}
    return names


def variables_in(text: str) -> set[str]:
    return set(_VARIABLE.findall(text))


def _port(addr: str) -> int:
    return parse_addr(addr)[1]


def default_ports() -> dict[str, int]:
    """``{variable: its default port}`` for every address setting."""
    server = {f.name: f.default for f in fields(ServerSettings)}
    gateway = {f.name: f.default for f in fields(GatewaySettings)}
    return {
        "TASKGATE_GRPC_ADDR": _port(str(server["grpc_addr"])),
        "TASKGATE_SERVER_METRICS_ADDR": _port(str(server["metrics_addr"])),
        "TASKGATE_PROCESSOR_METRICS_ADDR": _port(str(server["processor_metrics_addr"])),
        "TASKGATE_GATEWAY_ADDR": _port(str(gateway["addr"])),
        "TASKGATE_GATEWAY_METRICS_ADDR": _port(str(gateway["metrics_addr"])),
    }


def port_of(addr: str) -> int:
    return _port(addr)


def runnable_module(command: list[str]) -> str | None:
    """The module of ``python -m MODULE``, if it exists and has a ``__main__``; else None."""
    if command[:2] != ["python", "-m"] or len(command) < 3:
        return None
    module = command[2]
    if importlib.util.find_spec(module) is None:
        return None
    if importlib.util.find_spec(f"{module}.__main__") is None:
        return None
    return module

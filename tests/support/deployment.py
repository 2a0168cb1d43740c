"""What the code offers a deployment: its TASKGATE_* variables, the modules
``python -m`` runs, and the default ports. The deployment files (Dockerfile,
docker-compose.yml, deploy/k8s) are checked against these."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from gateway.config import Settings as GatewaySettings
from server.config import Settings as ServerSettings
from server.processor.config import ProcessorSettings
from taskgate_runtime.settings import parse_addr

# The settings of the processes a deployment runs.
PROCESS_SETTINGS = (ServerSettings, ProcessorSettings, GatewaySettings)
_VARIABLE = re.compile(r"\bTASKGATE_[A-Z0-9_]+\b")
# The processes a deployment runs, by module.
MODULES = ("server", "server.processor", "gateway")


def taskgate_variables() -> set[str]:
    """Every TASKGATE_* variable the server, processor and gateway settings read."""
    return {name for model in PROCESS_SETTINGS for name in model.variables()}


def variables_in(text: str) -> set[str]:
    return set(_VARIABLE.findall(text))


def _port(addr: str) -> int:
    return parse_addr(addr)[1]


def default_ports() -> dict[str, int]:
    """``{variable: its default port}`` for every address setting."""
    server, processor, gateway = ServerSettings(), ProcessorSettings(), GatewaySettings()
    return {
        "TASKGATE_GRPC_ADDR": _port(server.grpc_addr),
        "TASKGATE_SERVER_METRICS_ADDR": _port(server.metrics_addr),
        "TASKGATE_PROCESSOR_METRICS_ADDR": _port(processor.metrics_addr),
        "TASKGATE_GATEWAY_ADDR": _port(gateway.addr),
        "TASKGATE_GATEWAY_METRICS_ADDR": _port(gateway.metrics_addr),
    }


def port_of(addr: str) -> int:
    return _port(addr)


def runnable_module(command: list[str]) -> str | None:
    """The module of ``python -m MODULE``, if it exists and runs as a script: a package
    with a ``__main__``, or a module that checks ``__name__ == "__main__"``; else None."""
    if command[:2] != ["python", "-m"] or len(command) < 3:
        return None
    module = command[2]
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations is None:  # a module, not a package
        source = Path(spec.origin or "").read_text()
        return module if 'if __name__ == "__main__":' in source else None
    if importlib.util.find_spec(f"{module}.__main__") is None:
        return None
    return module

"""The import graph the README draws: the shared runtime imports no process's
package, and the gateway imports nothing of the server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_PACKAGES = {"server", "gateway", "devstack", "taskgate_client", "bench", "tests"}


def imported_packages(package: str) -> dict[str, set[str]]:
    """``{top-level package imported: {files importing it}}`` for every module of ``package``."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_runtime_imports_no_process_package() -> None:
    imports = imported_packages("taskgate_runtime")

    wrong = {name: files for name, files in imports.items() if name in PROCESS_PACKAGES}
    assert not wrong


@pytest.mark.parametrize("package", ["gateway", "taskgate_client"])
def test_the_gateway_and_the_client_import_nothing_of_the_server(package: str) -> None:
    assert "server" not in imported_packages(package)


@pytest.mark.parametrize("package", ["server", "gateway", "devstack", "taskgate_client"])
def test_every_process_builds_on_the_runtime(package: str) -> None:
    assert "taskgate_runtime" in imported_packages(package)

"""Every TASKGATE_* variable the code reads is in the README's one configuration
table, and the table names no variable nothing reads.

What the processes read comes from their settings models; the few variables
read outside a model (the tests' own, scripts') are found by their literal name."""

from __future__ import annotations

import re
from pathlib import Path

from devstack.stack import DevSettings
from taskgate_client.cli.config import CliSettings
from tests.support.deployment import PROCESS_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
MODELS = (*PROCESS_SETTINGS, DevSettings, CliSettings)
SOURCES = ("server", "gateway", "devstack", "taskgate_client", "tests", "bench", "scripts")
LITERAL = re.compile(r"\bTASKGATE_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
TABLE_ROW = re.compile(r"^\| `(TASKGATE_[A-Z0-9_]+)` \| [^|]+ \| .+\|$")


def _read_by_models() -> set[str]:
    return {name for model in MODELS for name in model.variables()}


def _read_by_name() -> set[str]:
    names: set[str] = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".sh"} and not path.name.startswith("test_readme"):
                names |= set(LITERAL.findall(path.read_text()))
    return names


def _read_by_code() -> set[str]:
    return _read_by_models() | _read_by_name()


def _configuration_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for line in section.splitlines() if (m := TABLE_ROW.match(line))}


def test_every_variable_the_code_reads_is_in_the_configuration_table() -> None:
    missing = _read_by_code() - _configuration_table()

    assert not missing, f"add to README.md's Configuration table: {sorted(missing)}"


def test_the_table_names_only_variables_something_reads() -> None:
    unread = _configuration_table() - _read_by_code()

    assert not unread, f"README.md documents variables nothing reads: {sorted(unread)}"


def test_the_models_and_the_scan_find_every_kind() -> None:
    models = _read_by_models()

    assert {
        "TASKGATE_GRPC_ADDR",
        "TASKGATE_DB_TIMEOUT",
        "TASKGATE_PROCESSOR_METRICS_ADDR",
    } <= models
    assert {"TASKGATE_GATEWAY_SSE_KEEPALIVE", "TASKGATE_DEV_DATA_DIR"} <= models
    assert {"TASKGATE_CLI_CONFIG", "TASKGATE_SERVER"} <= models
    assert "TASKGATE_TEST_REDIS_URL" in _read_by_name()

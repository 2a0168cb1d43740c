"""Every TASKGATE_* variable the code reads is in the README's one configuration
table, and the table names no variable nothing reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("server", "gateway", "devstack", "taskgate_client", "tests", "bench", "scripts")
LITERAL = re.compile(r"\bTASKGATE_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
# server.config.Env reads names without their prefix: env.get("GRPC_ADDR", ...)
ENV_CALL = re.compile(r"\b(?:get|cast|positive|count|duration)\(\s*\"([A-Z][A-Z0-9_]+)\"")
TABLE_ROW = re.compile(r"^\| `(TASKGATE_[A-Z0-9_]+)` \| [^|]+ \| .+\|$")


def _read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".sh"} or path.name.startswith("test_readme"):
                continue
            text = path.read_text()
            names |= set(LITERAL.findall(text))
            if "Env(" in text:
                found = ENV_CALL.findall(text)
                names |= {f"TASKGATE_{n}" for n in found if not n.startswith("TASKGATE_")}
    return names


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


def test_the_scan_finds_both_spellings() -> None:
    names = _read_by_code()

    assert {"TASKGATE_GRPC_ADDR", "TASKGATE_GATEWAY_SSE_KEEPALIVE"} <= names  # Env calls
    assert {"TASKGATE_CLI_CONFIG", "TASKGATE_TEST_REDIS_URL"} <= names  # literals

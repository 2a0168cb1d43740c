"""promtool checks monitoring/: the config, the rules, and the alerts' unit tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.monitoring import MONITORING, RULE_FILES

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is absent (Debian: apt-get install prometheus)"
)


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert f"{len(RULE_FILES)} rule files found" in out


def test_rules_are_valid() -> None:
    promtool("check", "rules", *(str(p) for p in RULE_FILES))


def test_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "tests/alerts_test.yml")

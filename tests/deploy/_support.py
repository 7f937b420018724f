"""Shared by the deploy/ checks: the files' paths and the optional promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "modelyard-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"


def promtool(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run promtool, or skip the test when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip(
            "promtool is not installed (Debian/Ubuntu: apt-get install prometheus); skipped its checks"
        )
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd)

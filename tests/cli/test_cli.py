"""The command line as users run it: help texts, check-config, models and the terminal chat."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import gateway_process

FAKE_CONFIG = """\
embedded_models: false
cloud_models_from_env: false
models:
  - name: echo
    deployments: [{provider: fake, model: echo}]
  - name: broken
    deployments: [{provider: fake, model: error-503}]
"""


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_process(tmp_path_factory.mktemp("cli"), FAKE_CONFIG) as (url, _log):
        yield url


@pytest.mark.parametrize("command", ["serve", "check-config", "models", "chat"])
def test_every_command_has_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout and "--help" in result.stdout


def test_top_level_help_lists_commands() -> None:
    out = run_cli("--help").stdout
    for command in ("serve", "check-config", "models", "chat"):
        assert command in out


def test_check_config_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(FAKE_CONFIG)
    result = run_cli("check-config", str(good))
    assert result.returncode == 0
    assert "OK" in result.stdout and "echo -> fake:echo" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "server:\n  prot: 1\nmodels:\n  - name: x\n"
        "    deployments: [{provider: openai, model: m, api_key: sk-123}]\n"
    )
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:2: server.prot: unknown key" in result.stderr
    assert f"{bad}:5:" in result.stderr and "secrets are references" in result.stderr
    assert "sk-123" not in result.stderr


def test_models_lists_a_running_gateway(gateway: str) -> None:
    result = run_cli("models", "--url", gateway)
    assert result.returncode == 0
    assert "echo" in result.stdout and "broken" in result.stdout


def test_models_says_when_no_gateway_runs() -> None:
    result = run_cli("models", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "is `modelyard serve` running?" in result.stderr


def test_chat_streams_answers_and_keeps_history(gateway: str) -> None:
    result = run_cli(
        "chat", "--url", gateway, "-m", "echo", stdin="hello there\n/reset\nsecond turn\n/quit\n"
    )
    assert result.returncode == 0, result.stderr
    assert "echo: hello there" in result.stdout
    assert "history cleared" in result.stdout
    assert "echo: second turn" in result.stdout


def test_chat_shows_upstream_errors_without_crashing(gateway: str) -> None:
    result = run_cli("chat", "--url", gateway, "-m", "broken", stdin="hi\n")
    assert result.returncode == 0
    assert "error 503" in result.stdout

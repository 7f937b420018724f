"""The ``observability:`` block: defaults, validation, secret references, which sinks it makes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.config.load import load_config
from modelyard.errors import ConfigError
from modelyard.state import AppState
from modelyard.telemetry.access_log import AccessLog
from modelyard.telemetry.jsonlog import JsonLogSink
from modelyard.telemetry.metrics import MetricsSink
from modelyard.telemetry.multiproc import ENV_VAR, multiprocess_metrics_dir
from modelyard.telemetry.tracing import TracingSink
from tests.fakes.config import ENVIRON
from tests.telemetry._support import config_text


def test_defaults() -> None:
    obs = load_config(config_text(), environ=ENVIRON).observability
    assert (obs.metrics_auth, obs.log_format, obs.log_file, obs.budget_refresh_s) == (
        False,
        "text",
        None,
        15.0,
    )
    tracing = obs.tracing
    assert (tracing.enabled, tracing.otlp_endpoint, tracing.capture_content) == (False, None, False)
    assert (tracing.service_name, tracing.sample_ratio, tracing.otlp_headers) == ("modelyard", 1.0, {})


def test_otlp_headers_are_secret_references_resolved_at_load() -> None:
    text = config_text(
        observability="tracing: {enabled: true, otlp_endpoint: 'http://127.0.0.1:4318/v1/traces', "
        "otlp_headers: {authorization: env:TEST_MASTER_KEY}}"
    )
    tracing = load_config(text, environ=ENVIRON).observability.tracing
    assert tracing.otlp_headers == {"authorization": ENVIRON["TEST_MASTER_KEY"]}
    with pytest.raises(ConfigError, match="TEST_MASTER_KEY is not set"):
        load_config(text, environ={})
    literal = text.replace("env:TEST_MASTER_KEY", "Bearer abc")
    with pytest.raises(ConfigError, match="secrets are references"):
        load_config(literal, environ=ENVIRON)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("tracing: {otlp_endpoint: 'grpc://collector:4317'}", "http:// or https://"),
        ("tracing: {sample_ratio: 1.5}", "less than or equal to 1"),
        ("log_format: xml", "'text' or 'json'"),
        ("metrics: true", "unknown key"),
    ],
)
def test_invalid(block: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(config_text(observability=block), environ=ENVIRON)


async def test_sinks_follow_the_config(tmp_path: Path) -> None:
    async def kinds(block: str) -> list[type]:
        state = AppState.build(load_config(config_text(observability=block), environ=ENVIRON))
        await state.observability.aclose()
        await state.session.close()
        return [type(s) for s in state.observability.sinks()]

    assert await kinds("") == [MetricsSink, AccessLog]
    assert await kinds(f"log_format: json\nlog_file: {tmp_path / 'x.jsonl'}") == [MetricsSink, JsonLogSink]
    traced = "tracing: {enabled: true, otlp_endpoint: 'http://127.0.0.1:9/v1/traces'}"
    assert await kinds(traced) == [MetricsSink, AccessLog, TracingSink]
    assert await kinds("tracing: {enabled: true}") == [MetricsSink, AccessLog]  # nowhere to send: warned


def test_multiprocess_dir_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with multiprocess_metrics_dir(1) as none:
        assert none is None and ENV_VAR not in os.environ
    with multiprocess_metrics_dir(2) as directory:
        assert directory is not None and os.environ[ENV_VAR] == directory
        assert os.path.isdir(directory) and not os.listdir(directory)
    assert ENV_VAR not in os.environ and not os.path.exists(directory)
    monkeypatch.setenv(ENV_VAR, "/operator/chosen")
    with multiprocess_metrics_dir(4) as chosen:
        assert chosen == "/operator/chosen"
    assert os.environ[ENV_VAR] == "/operator/chosen"

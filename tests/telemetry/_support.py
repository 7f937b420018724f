"""Shared by the telemetry tests: a gateway config over the fake provider, and a /metrics parser."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import GatewayServer
from tests.fakes.config import ENVIRON, MASTER_KEY, OPENAI_KEY

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Models (all on modelyard's scripted fake provider; the name after "fake/" is its behaviour):
#   echo          answers, one deployment
#   boom          always 503, one attempt; its breaker opens after one failure
#   flaky         503 then echo: two deployments in priority tiers, so the 503 one goes first
#   primary-down  429, falls back to the model `echo`
#   slow          400 ms answers, one at a time (concurrency 1, queue 4)
#   oa-badkey     an OpenAI upstream that rejects our (wrong) key with a 401 echoing it
MODELS = """
models:
  - name: echo
    aliases: [echo-latest]
    deployments:
      - {provider: fake, model: echo}
  - name: boom
    routing: {max_attempts: 1, breaker: {consecutive_failures: 1, base_open_s: 600}}
    deployments:
      - {provider: fake, model: error-503}
  - name: flaky
    deployments:
      - {provider: fake, model: error-503, priority: 0}
      - {provider: fake, model: echo, priority: 1}
  - name: primary-down
    routing: {fallbacks: [echo]}
    deployments:
      - {provider: fake, model: error-429}
  - name: slow
    deployments:
      - {provider: fake, model: slow-400, max_concurrency: 1, max_queue: 4, max_queue_wait_s: 5}
"""


def config_text(*, observability: str = "", extra_models: str = "", master_key: bool = True) -> str:
    head = "server:\n  request_timeout_s: 10\n"
    if master_key:
        head += "  master_key: env:TEST_MASTER_KEY\n"
    head += "embedded_models: false\ncloud_models_from_env: false\n"
    if observability:
        head += "observability:\n" + "".join(f"  {line}\n" for line in observability.strip().splitlines())
    return head + MODELS + extra_models


def bad_key_model(openai_base_url: str) -> str:
    """A model whose upstream gets the wrong key and answers 401 with the key in its message."""
    return (
        "  - name: badkey\n"
        "    routing: {max_attempts: 1}\n"
        "    deployments:\n"
        f"      - {{provider: openai, model: rec-text, base_url: '{openai_base_url}', "
        "api_key: env:TEST_WRONG_KEY}\n"
    )


@contextmanager
def running_gateway(text: str) -> Iterator[GatewayServer]:
    server = GatewayServer(text, ENVIRON).start()
    try:
        yield server
    finally:
        server.stop()


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of GET /metrics, keyed by (sample name, labels)."""
    response = httpx.get(url + "/metrics", headers=headers or {}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one name: labels → value."""
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def chat(
    url: str, model: str, *, stream: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers or AUTH, timeout=15)


SECRET_VALUES = (OPENAI_KEY, MASTER_KEY)

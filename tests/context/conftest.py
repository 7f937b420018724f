"""Gateways for the context tests: the real embedded model's tokenizer (and the model itself, as
the summarizer and the small-window local model) in front of the fake cloud upstreams."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelyard.providers.llamacpp import embedded_model_path
from tests.fakes import FakeUpstream, GatewayServer


def gguf_path() -> str:
    try:
        return embedded_model_path()
    except FileNotFoundError as exc:
        pytest.skip(f"the embedded GGUF is not installed: {exc}")


def context_config(openai_url: str, anthropic_url: str, *, window: int = 512) -> str:
    """Small local windows (``window`` tokens) with each policy; ``big`` is a 200K cloud model."""
    local = f"{{provider: llamacpp, n_ctx: {window}}}"
    return f"""
server:
  master_key: env:TEST_MASTER_KEY
  request_timeout_s: 120
embedded_models: false
cloud_models_from_env: false
models:
  - name: local
    deployments: [{local}]
    context: {{policy: trim, reserve_tokens: 64}}
  - name: small-reject
    deployments: [{local}]
    context: {{policy: reject, reserve_tokens: 64}}
  - name: small-fallback
    deployments: [{local}]
    routing: {{context_fallback: big}}
    context: {{policy: fallback, reserve_tokens: 64}}
  - name: small-nofallback
    deployments: [{local}]
    context: {{policy: fallback}}
  - name: big
    deployments:
      - {{provider: anthropic, model: rec-text, base_url: "{anthropic_url}", api_key: env:TEST_ANTHROPIC_KEY,
          context_window: 200000}}
  - name: chat-sum
    deployments:
      - {{provider: openai, model: rec-text, base_url: "{openai_url}", api_key: env:TEST_OPENAI_KEY,
          context_window: {window}}}
    context:
      policy: summarize
      reserve_tokens: 64
      summarize: {{model: local, max_summary_tokens: 48}}
  - name: chat-sum-broken
    deployments:
      - {{provider: openai, model: rec-text, base_url: "{openai_url}", api_key: env:TEST_OPENAI_KEY,
          context_window: {window}}}
    context: {{policy: summarize, reserve_tokens: 64, summarize: {{model: broken}}}}
  - name: broken
    deployments: [{{provider: fake, model: error-500}}]
    routing: {{max_attempts: 1}}
  - name: gpt-4
    deployments:
      - {{provider: openai, model: gpt-4, base_url: "{openai_url}", api_key: env:TEST_OPENAI_KEY}}
  - name: an-count
    deployments:
      - {{provider: anthropic, model: rec-text, base_url: "{anthropic_url}", api_key: env:TEST_ANTHROPIC_KEY}}
"""


@pytest.fixture(scope="module")
def context_gateway(
    gateway_factory: Callable[..., GatewayServer], fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> GatewayServer:
    gguf_path()
    return gateway_factory(config_text=context_config(fake_openai.base_url, fake_anthropic.base_url))

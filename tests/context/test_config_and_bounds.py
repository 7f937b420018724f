"""The context config is checked at load time; the fast path's byte bound never undercounts."""

from __future__ import annotations

import pytest

from modelyard.config.context_schema import ContextConfig
from modelyard.config.load import load_config
from modelyard.errors import ConfigError
from modelyard.providers.base import WireProtocol
from modelyard.routing.context.profiles import Counters, CounterSpec
from modelyard.routing.context.service import ContextService, upper_bound
from modelyard.translate import openai_request_to_anthropic
from tests.context.conftest import gguf_path
from tests.context.conversation import TOOLS, conversation


def _load(models: str) -> None:
    load_config("embedded_models: false\ncloud_models_from_env: false\nmodels:\n" + models)


def test_unknown_fallback_and_summarizer_models_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        _load(
            "  - name: a\n    deployments: [{provider: fake}]\n"
            "    context: {policy: summarize, fallback_models: [nope], summarize: {model: gone}}\n"
        )
    text = str(caught.value)
    assert "context.fallback_models: 'nope' is not a configured model" in text
    assert "context.summarize.model: 'gone' is not a configured model" in text
    with pytest.raises(ConfigError, match="cannot fall back to itself"):
        _load("  - name: a\n    deployments: [{provider: fake}]\n    context: {fallback_models: [a]}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        _load("  - name: a\n    deployments: [{provider: fake}]\n    context: {polcy: trim}\n")


def test_zero_config_fits_with_the_default_policy() -> None:
    config = load_config(None, environ={})
    local = next(m for m in config.models if m.name == "local")
    assert local.context == ContextConfig() and local.context.policy == "reject"


def test_reserve_is_the_requested_cap_up_to_half_the_window() -> None:
    cfg = ContextConfig()
    assert ContextService.reserve(cfg, 100, 2048) == 100
    assert ContextService.reserve(cfg, 5000, 2048) == 1024
    assert ContextService.reserve(cfg, -1, 2048) == 256  # 1/8 of the window
    assert ContextService.reserve(cfg, -1, 200_000) == 1024
    assert ContextService.reserve(ContextConfig(reserve_tokens=64), -1, 2048) == 64


@pytest.mark.localmodel
def test_the_byte_bound_is_above_every_exact_count() -> None:
    counters = Counters()
    gguf = counters.get(CounterSpec("gguf", gguf_path()))
    cl100k = counters.get(CounterSpec("cl100k"))
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
        {"model": "m", "messages": [{"role": "user", "content": "東京 🦊 " * 50}]},
        {"model": "m", "messages": conversation(12), "tools": TOOLS},
        {"model": "m", "messages": [{"role": "user", "content": "\n\n\n" * 100 + "x"}]},
    ]
    for body in bodies:
        bound = upper_bound(body)
        assert bound >= gguf.request(body, WireProtocol.OPENAI)
        assert bound >= cl100k.request(body, WireProtocol.OPENAI)
        anthropic_body = openai_request_to_anthropic(body, default_max_tokens=16)
        assert upper_bound(anthropic_body) >= counters.get(CounterSpec("anthropic")).request(
            anthropic_body, WireProtocol.ANTHROPIC
        )

"""The gateway configuration the conformance and e2e suites run against.

Model names say where they go: ``oa-<behaviour>`` is served by the fake OpenAI upstream,
``an-<behaviour>`` by the fake Anthropic upstream (the upstream gets ``<behaviour>`` as its model
name, see :mod:`tests.fakes.upstream`), ``fake-*`` by modelyard's own scripted provider.
"""

from __future__ import annotations

from modelyard.config.schema import ModelConfig

# Secret values, passed to the gateway through (fake) environment variables. They are shaped so
# that only modelyard's known-secret redaction can hide them (no ``sk-`` prefix for a pattern).
OPENAI_KEY = "oa-upstream-7f3c9e1d5b2a468012"
ANTHROPIC_KEY = "an-upstream-2b8d4f6a0c1e3579ab"
MASTER_KEY = "mk-gateway-c0ffee1234abcd5678"
WRONG_KEY = "wrong-upstream-5e6f7a8b9c0d1e2f"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, MASTER_KEY, WRONG_KEY)

ENVIRON = {
    "TEST_OPENAI_KEY": OPENAI_KEY,
    "TEST_ANTHROPIC_KEY": ANTHROPIC_KEY,
    "TEST_MASTER_KEY": MASTER_KEY,
    "TEST_WRONG_KEY": WRONG_KEY,
}

# Limits small enough to test, large enough for every legitimate request of the suites.
MAX_BODY_BYTES = 65536
MAX_MESSAGES = 64
MAX_OUTPUT_TOKENS = 100_000

UPSTREAM_BEHAVIOURS = (
    "rec-text",
    "rec-tools",
    "rec-thinking",
    "rec-json",
    "rec-length",
    "rec-error-mid",
    "drop-mid",
    "err-400",
    "err-401",
    "err-429",
    "err-500",
    "err-503",
    "err-529",
    "missing",
)
FAKE_PROVIDER_MODELS = {
    "fake-echo": ("echo", "openai"),
    "fake-tools": ("tool-call", "openai"),
    "fake-json": ("json", "openai"),
    "fake-429": ("error-429", "openai"),
    "fake-500": ("error-500", "openai"),
    "fake-503": ("error-503", "openai"),
    "fake-cut": ("stream-cut-2", "openai"),
    "fake-an-echo": ("echo", "anthropic"),
    "fake-an-tools": ("tool-call", "anthropic"),
    "fake-an-cut": ("stream-cut-2", "anthropic"),
}


def gateway_config(openai_base_url: str, anthropic_base_url: str, *, master_key: bool = True) -> str:
    """YAML for a gateway in front of the two fake upstreams (and the fake provider)."""
    lines = [
        "server:",
        f"  max_body_bytes: {MAX_BODY_BYTES}",
        f"  max_messages: {MAX_MESSAGES}",
        f"  max_output_tokens: {MAX_OUTPUT_TOKENS}",
        "  request_timeout_s: 10",
        "  connect_timeout_s: 2",
    ]
    if master_key:
        lines.append("  master_key: env:TEST_MASTER_KEY")
    lines += ["embedded_models: false", "cloud_models_from_env: false", "models:"]

    def model(name: str, deployment: str, aliases: tuple[str, ...] = ()) -> None:
        lines.append(f"  - name: {name}")
        if aliases:
            lines.append(f"    aliases: [{', '.join(aliases)}]")
        if "routing" in ModelConfig.model_fields:
            # One attempt and no circuit breaking: each test sees exactly what its upstream did.
            lines.append("    routing: {max_attempts: 1, breaker: {consecutive_failures: 1000000}}")
        lines.append("    deployments:")
        lines.append("      - " + deployment.replace("\n", "\n        "))

    for behaviour in UPSTREAM_BEHAVIOURS:
        model(
            f"oa-{behaviour}",
            f"provider: openai\nmodel: {behaviour}\nbase_url: {openai_base_url}\n"
            "api_key: env:TEST_OPENAI_KEY",
            ("gpt-4o-mini",) if behaviour == "rec-text" else (),
        )
        model(
            f"an-{behaviour}",
            f"provider: anthropic\nmodel: {behaviour}\nbase_url: {anthropic_base_url}\n"
            "api_key: env:TEST_ANTHROPIC_KEY",
            ("claude-sonnet-4-5",) if behaviour == "rec-text" else (),
        )
    model(
        "oa-embed",
        f"provider: openai\nmodel: rec-embed\nbase_url: {openai_base_url}\n"
        "api_key: env:TEST_OPENAI_KEY\nembeddings: true",
    )
    model(
        "oa-badkey",
        f"provider: openai\nmodel: rec-text\nbase_url: {openai_base_url}\napi_key: env:TEST_WRONG_KEY",
    )
    model(
        "an-badkey",
        f"provider: anthropic\nmodel: rec-text\nbase_url: {anthropic_base_url}\napi_key: env:TEST_WRONG_KEY",
    )
    for name, (behaviour, protocol) in FAKE_PROVIDER_MODELS.items():
        model(name, f"provider: fake\nmodel: {behaviour}\nprotocol: {protocol}")
    return "\n".join(lines) + "\n"

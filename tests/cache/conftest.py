"""A real gateway with response caching on, in front of the fake OpenAI and Anthropic upstreams."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from tests.fakes import GatewayServer
from tests.fakes.config import MASTER_KEY
from tests.fakes.upstream import FakeUpstream


def cache_config(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, cache: str) -> str:
    """Models: ``oa-*`` / ``an-*`` → the fake vendors (``<behaviour>``), ``echo`` / ``an-echo`` /
    ``cut`` → modelyard's scripted provider, ``uncached`` opted out, ``sem*`` semantic."""
    one_try = "    routing: {max_attempts: 1, breaker: {consecutive_failures: 1000000}}\n"

    def vendor(name: str, provider: str, behaviour: str) -> str:
        base = fake_openai.base_url if provider == "openai" else fake_anthropic.base_url
        key = "TEST_OPENAI_KEY" if provider == "openai" else "TEST_ANTHROPIC_KEY"
        return (
            f"  - name: {name}\n{one_try}    deployments:\n"
            f"      - {{provider: {provider}, model: {behaviour}, base_url: '{base}',\n"
            f"         api_key: 'env:{key}'}}\n"
        )

    def fake(name: str, behaviour: str, protocol: str = "openai", cache_lines: str = "") -> str:
        return (
            f"  - name: {name}\n{one_try}{cache_lines}    deployments:\n"
            f"      - {{provider: fake, model: {behaviour}, protocol: {protocol}}}\n"
        )

    models = "".join(
        [
            vendor("oa-text", "openai", "rec-text"),
            vendor("oa-tools", "openai", "rec-tools"),
            vendor("oa-err", "openai", "err-500"),
            vendor("oa-drop", "openai", "drop-mid"),
            vendor("an-text", "anthropic", "rec-text"),
            vendor("an-tools", "anthropic", "rec-tools"),
            vendor("an-drop", "anthropic", "drop-mid"),
            fake("echo", "echo"),
            fake("an-echo", "echo", "anthropic"),
            fake("cut", "stream-cut-2"),
            fake("uncached", "echo", cache_lines="    cache: {enabled: false}\n"),
            fake("sem", "echo", cache_lines="    cache: {semantic: {enabled: true}}\n"),
            fake("sem-tools", "tool-call", cache_lines="    cache: {semantic: {enabled: true}}\n"),
            fake(
                "sem-tools-on",
                "tool-call",
                cache_lines="    cache: {semantic: {enabled: true, include_tools: true}}\n",
            ),
        ]
    )
    return (
        "server: {master_key: env:TEST_MASTER_KEY, request_timeout_s: 10}\n"
        "embedded_models: false\ncloud_models_from_env: false\n"
        f"cache:\n  enabled: true\n  ttl_s: 600\n{cache}"
        f"models:\n{models}"
    )


@pytest.fixture(scope="module")
def cached_gateway_factory(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[Callable[..., GatewayServer]]:
    from tests.fakes.config import ENVIRON

    started: list[GatewayServer] = []

    def start(cache_lines: str = "", environ: dict[str, str] | None = None) -> GatewayServer:
        text = cache_config(fake_openai, fake_anthropic, cache_lines)
        server = GatewayServer(text, {**ENVIRON, **(environ or {})}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def cached_gateway(cached_gateway_factory: Callable[..., GatewayServer]) -> GatewayServer:
    return cached_gateway_factory("")


@pytest.fixture(scope="module")
def oa(cached_gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=cached_gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=20
    ) as client:
        yield client


@pytest.fixture(scope="module")
def an(cached_gateway: GatewayServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=cached_gateway.url, api_key=MASTER_KEY, max_retries=0, timeout=20
    ) as client:
        yield client


@pytest.fixture(scope="module")
def admin(cached_gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=cached_gateway.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=20
    ) as client:
        yield client

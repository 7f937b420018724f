"""Fixtures for server-side conversations and the Responses API: an in-process gateway on SQLite
in front of modelyard's fake provider and the fake OpenAI / Anthropic upstreams, with the official
SDKs as clients; and the store suite's ``backend`` (SQLite, and PostgreSQL when
MODELYARD_TEST_POSTGRES_DSN is set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import ANTHROPIC_KEY, OPENAI_KEY
from tests.store.conftest import backend

__all__ = ["backend"]

MASTER = "mk-conv-3f9a1c7e5d2b"
MASTER_H = {"authorization": f"Bearer {MASTER}"}
ENVIRON = {"MK": MASTER, "OA_KEY": OPENAI_KEY, "AN_KEY": ANTHROPIC_KEY}


def gateway_yaml(database: str, openai_url: str = "", anthropic_url: str = "", extra: str = "") -> str:
    lines = [
        "server: {master_key: env:MK, request_timeout_s: 10, connect_timeout_s: 2}",
        "embedded_models: false",
        "cloud_models_from_env: false",
        f"storage: {{database: {database}}}",
        extra,
        "models:",
    ]

    def model(name: str, deployment: str) -> None:
        lines.append(f"  - name: {name}")
        lines.append("    routing: {max_attempts: 1, breaker: {consecutive_failures: 1000000}}")
        lines.append(f"    deployments: [{{{deployment}}}]")

    for name, behaviour, protocol in (
        ("echo", "echo", "openai"),
        ("an-echo", "echo", "anthropic"),
        ("tools", "tool-call", "openai"),
        ("an-tools", "tool-call", "anthropic"),
        ("cut", "stream-cut-2", "openai"),
        ("an-cut", "stream-cut-2", "anthropic"),
        ("boom", "error-500", "openai"),
    ):
        model(name, f"provider: fake, model: {behaviour}, protocol: {protocol}")
    if openai_url:
        model("oa-text", f"provider: openai, model: rec-text, base_url: '{openai_url}', api_key: env:OA_KEY")
    if anthropic_url:
        model(
            "an-text",
            f"provider: anthropic, model: rec-text, base_url: '{anthropic_url}', api_key: env:AN_KEY",
        )
    return "\n".join(line for line in lines if line) + "\n"


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[GatewayServer]:
    db = tmp_path_factory.mktemp("conversations") / "gw.db"
    text = gateway_yaml(f'"sqlite:///{db}"', fake_openai.base_url, fake_anthropic.base_url)
    server = GatewayServer(text, ENVIRON).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oa(gw: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def an(gw: GatewayServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def http(gw: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10, headers=MASTER_H) as client:
        yield client


def new_key(http: httpx.Client, **body: Any) -> tuple[str, str]:
    """(the key, its id), created with the master key."""
    r = http.post("/admin/keys", json={"role": "key-holder", **body})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


def tmp_db(tmp_path: Path) -> str:
    return f'"sqlite:///{tmp_path / "gw.db"}"'

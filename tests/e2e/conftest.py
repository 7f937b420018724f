"""The official SDKs pointed at a running gateway on loopback (no retries: each test sees one try)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.fakes import GatewayServer
from tests.fakes.config import MASTER_KEY


@pytest.fixture(scope="session")
def openai_client(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def anthropic_client(gateway: GatewayServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0, timeout=10) as client:
        yield client

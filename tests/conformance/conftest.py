"""Raw HTTP clients for the conformance suite: exact bytes in, exact bytes out."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import GatewayServer
from tests.fakes.config import MASTER_KEY

OPENAI_HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}
ANTHROPIC_HEADERS = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="session")
def oa_http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    """Speaks to the gateway as an OpenAI client would (bearer key)."""
    with httpx.Client(base_url=gateway.url, headers=OPENAI_HEADERS, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def an_http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    """Speaks to the gateway as an Anthropic client would (x-api-key, anthropic-version)."""
    with httpx.Client(base_url=gateway.url, headers=ANTHROPIC_HEADERS, timeout=10) as client:
        yield client

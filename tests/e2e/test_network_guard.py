"""The suite's own safety net: nothing may reach a non-loopback address (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from tests import conftest
from tests.conftest import NetworkAccessBlocked


def take_attempts(before: int) -> list[str]:
    """The attempts since ``before``, removed: these tests make them on purpose."""
    attempts = conftest.BLOCKED_ATTEMPTS[before:]
    del conftest.BLOCKED_ATTEMPTS[before:]
    return attempts


@pytest.mark.parametrize("address", [("192.0.2.1", 443), ("2001:db8::1", 443, 0, 0)])
def test_sockets_cannot_leave_the_machine(address: tuple[object, ...]) -> None:
    before = len(conftest.BLOCKED_ATTEMPTS)
    family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(NetworkAccessBlocked):
        sock.connect(address)
    assert take_attempts(before)


def test_name_lookups_and_http_clients_are_blocked() -> None:
    before = len(conftest.BLOCKED_ATTEMPTS)
    with pytest.raises(NetworkAccessBlocked):
        socket.getaddrinfo("api.openai.com", 443)
    with pytest.raises(NetworkAccessBlocked):
        httpx.get("https://api.anthropic.com/v1/models", timeout=1)
    assert len(take_attempts(before)) == 2


async def test_asyncio_connections_are_blocked() -> None:
    before = len(conftest.BLOCKED_ATTEMPTS)
    with pytest.raises(NetworkAccessBlocked):
        await asyncio.open_connection("198.51.100.7", 80)
    assert take_attempts(before)


def test_loopback_stays_open() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass

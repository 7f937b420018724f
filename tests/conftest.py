"""Suite-wide fixtures: the no-internet guard, and the fake upstreams and gateway for e2e tests.

Nothing in the test suite may reach the internet (DESIGN invariant 8): every socket connection and
every asyncio connection to an address that is not loopback fails loudly, and a test during which
one was attempted fails even when the code under test swallowed the error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import ANTHROPIC_KEY, ENVIRON, OPENAI_KEY, gateway_config


class NetworkAccessBlocked(RuntimeError):
    """A test tried to reach a non-loopback address. (Not an OSError: nobody may retry it away.)"""


BLOCKED_ATTEMPTS: list[str] = []


def _is_loopback_host(host: Any) -> bool:
    if host is None:
        return True  # a listening/unspecified address, not a destination
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _check_address(family: int, address: Any) -> None:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets and socket pairs stay on this machine
    host = address[0] if isinstance(address, tuple) else address
    if not _is_loopback_host(host):
        BLOCKED_ATTEMPTS.append(repr(address))
        raise NetworkAccessBlocked(f"tests must not reach the network: connection to {address!r} blocked")


@pytest.fixture(scope="session", autouse=True)
def _modelyard_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every gateway a test starts (in-process or a child process) keeps its default database in
    a temporary MODELYARD_HOME, never in the developer's own."""
    previous = os.environ.get("MODELYARD_HOME")
    os.environ["MODELYARD_HOME"] = str(tmp_path_factory.mktemp("modelyard-home"))
    yield
    if previous is None:
        os.environ.pop("MODELYARD_HOME", None)
    else:
        os.environ["MODELYARD_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def _no_internet() -> Iterator[None]:
    """Fail any connection to a non-loopback address (sockets, asyncio, name lookups)."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo
    original_create_connection = asyncio.base_events.BaseEventLoop.create_connection

    def connect(self: socket.socket, address: Any) -> None:
        _check_address(self.family, address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check_address(self.family, address)
        return original_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("", "0.0.0.0", "::") and not _is_loopback_host(host):  # unspecified: a bind
            BLOCKED_ATTEMPTS.append(f"name lookup {host!r}")
            raise NetworkAccessBlocked(f"tests must not reach the network: lookup of {host!r} blocked")
        return original_getaddrinfo(host, *args, **kwargs)

    async def create_connection(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        if kwargs.get("sock") is None and not _is_loopback_host(host):
            BLOCKED_ATTEMPTS.append(f"asyncio connection to {host!r}")
            raise NetworkAccessBlocked(f"tests must not reach the network: connection to {host!r} blocked")
        return await original_create_connection(self, *args, **kwargs)  # type: ignore[call-overload]

    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]
    socket.getaddrinfo = getaddrinfo
    asyncio.base_events.BaseEventLoop.create_connection = create_connection  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = original_getaddrinfo
        asyncio.base_events.BaseEventLoop.create_connection = original_create_connection  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _no_internet_attempted() -> Iterator[None]:
    """Fail the test if it attempted a blocked connection, even one the code under test caught."""
    before = len(BLOCKED_ATTEMPTS)
    yield
    attempts = BLOCKED_ATTEMPTS[before:]
    del BLOCKED_ATTEMPTS[before:]
    assert not attempts, f"the test tried to reach the network: {attempts}"


# -- fake upstreams and the gateway (started once per session, on demand) --------------------------
@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream("openai", api_key=OPENAI_KEY).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream("anthropic", api_key=ANTHROPIC_KEY).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def gateway_factory(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[Callable[..., GatewayServer]]:
    """Start extra gateways in front of the same fakes: ``gateway_factory(master_key=False)``."""
    started: list[GatewayServer] = []

    def start(*, master_key: bool = True, config_text: str | None = None) -> GatewayServer:
        text = config_text or gateway_config(
            fake_openai.base_url, fake_anthropic.base_url, master_key=master_key
        )
        server = GatewayServer(text, ENVIRON).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def gateway(gateway_factory: Callable[..., GatewayServer]) -> GatewayServer:
    """The gateway most tests use: a master key, the fakes behind it, small limits."""
    return gateway_factory()


@pytest.fixture
def upstreams(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> tuple[FakeUpstream, FakeUpstream]:
    """Both fakes with their request logs cleared for this test: (openai, anthropic)."""
    fake_openai.clear()
    fake_anthropic.clear()
    return fake_openai, fake_anthropic

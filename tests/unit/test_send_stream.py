"""``send_stream``: when a client that leaves has (or has not) got the whole answer.

The official OpenAI SDK closes the connection as soon as it reads ``data: [DONE]``; the gateway may
still be reading the upstream's end of stream then. Such a stream was delivered: it must count as
complete (ledger outcome ``ok``, cacheable, recorded in its conversation), not as a client that
went away. A client that leaves before the terminal event did not get the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from modelyard.api.asgi import is_terminal_event, send_stream


class _Peer:
    """The client side of the ASGI connection: it disconnects once it has read a marker."""

    def __init__(self, leave_after: bytes) -> None:
        self.leave_after = leave_after
        self.sent: list[bytes] = []
        self.gone = asyncio.Event()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.gone.is_set():
            raise OSError("client disconnected")
        body = message.get("body", b"")
        self.sent.append(body)
        if self.leave_after and self.leave_after in body:
            self.gone.set()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def _upstream(chunks: list[bytes], drained: list[bytes], tail_delay: float) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
            drained.append(chunk)
        await asyncio.sleep(tail_delay)  # the upstream's end of stream arrives a little later
        drained.append(b"<end>")

    return gen()


def test_terminal_events_are_recognised() -> None:
    assert is_terminal_event(b"data: [DONE]\n\n")
    assert is_terminal_event(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert not is_terminal_event(b'data: {"choices":[{"delta":{"content":"[DONE]"}}]}\n\n')


def test_a_client_leaving_right_after_done_got_the_whole_stream() -> None:
    async def scenario() -> tuple[bool, list[bytes]]:
        peer = _Peer(b"[DONE]")
        drained: list[bytes] = []
        rest = _upstream([b'data: {"x":2}\n\n', b"data: [DONE]\n\n"], drained, 0.05)
        completed = await send_stream(peer.send, peer.receive, b'data: {"x":1}\n\n', rest, [])
        return completed, drained

    completed, drained = asyncio.run(scenario())
    assert completed is True
    assert drained[-1] == b"<end>"  # the upstream was read to its end, not cut


def test_a_client_leaving_before_the_terminal_event_did_not() -> None:
    async def scenario() -> bool:
        peer = _Peer(b'"x":2')
        drained: list[bytes] = []
        rest = _upstream([b'data: {"x":2}\n\n', b'data: {"x":3}\n\n', b"data: [DONE]\n\n"], drained, 0.05)
        return await send_stream(peer.send, peer.receive, b'data: {"x":1}\n\n', rest, [])

    assert asyncio.run(scenario()) is False


def test_a_client_staying_to_the_end_completes_normally() -> None:
    async def scenario() -> tuple[bool, list[bytes]]:
        peer = _Peer(b"")
        rest = _upstream([b"event: message_stop\ndata: {}\n\n"], [], 0.0)
        start = b"event: message_start\ndata: {}\n\n"
        completed = await send_stream(peer.send, peer.receive, start, rest, [])
        return completed, peer.sent

    completed, sent = asyncio.run(scenario())
    assert completed is True
    assert sent[-1] == b""  # the response was ended properly

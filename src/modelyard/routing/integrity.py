"""Is an upstream stream well-formed and did it really finish?

A stream that stops cleanly but early (no ``finish_reason`` / ``stop_reason``, no ``[DONE]`` /
``message_stop``) must not reach the caller as a complete answer (Portkey #1797): it is turned
into an explicit error. A stream that finished its answer but dropped only the terminator gets the
terminator added. An event that is not valid JSON is dropped (and logged), never relayed: an SDK
would crash on it.
"""

from __future__ import annotations

import logging

import orjson

from modelyard.errors import UpstreamError
from modelyard.providers.base import SSEEvent, WireProtocol

log = logging.getLogger("modelyard.stream")

OPENAI_DONE = b"data: [DONE]\n\n"
ANTHROPIC_STOP = SSEEvent(b'{"type":"message_stop"}', "message_stop").encode()


class StreamIntegrity:
    __slots__ = ("dropped", "errored", "finished", "protocol", "terminated")

    def __init__(self, protocol: WireProtocol) -> None:
        self.protocol = protocol
        self.finished = False
        """The answer's end was announced (finish_reason / stop_reason)."""
        self.terminated = False
        """The stream's terminator arrived ([DONE] / message_stop)."""
        self.errored = False
        """The upstream itself sent an error event (relayed as it is)."""
        self.dropped = 0

    def accept(self, event: SSEEvent) -> bool:
        """Whether to pass the event on; updates what has been seen."""
        data = event.data
        if self.protocol is WireProtocol.OPENAI:
            if data == b"[DONE]":
                self.terminated = True
                return True
            if b'"finish_reason":"' in data:
                self.finished = True
            elif data.startswith(b'{"error"'):
                self.errored = True
        else:
            kind = event.event
            if kind == "message_stop":
                self.terminated = True
            elif kind == "message_delta" and b'"stop_reason":"' in data:
                self.finished = True
            elif kind == "error":
                self.errored = True
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            self.dropped += 1
            log.warning("dropped a malformed %s stream event (%d bytes)", self.protocol.value, len(data))
            return False
        return True

    def incomplete_error(self, provider: str, model: str) -> UpstreamError | None:
        """The error to end with when the upstream stopped before finishing the answer."""
        if self.finished or self.errored:
            return None
        return UpstreamError(
            "the upstream ended the stream before the answer was finished (no finish reason and no "
            "end-of-stream marker): the answer is incomplete",
            status=502,
            provider=provider,
            model=model,
        )

    def missing_terminator(self) -> bytes | None:
        """The terminator to add when the answer finished but the upstream did not send it."""
        if self.terminated or self.errored or not self.finished:
            return None
        return OPENAI_DONE if self.protocol is WireProtocol.OPENAI else ANTHROPIC_STOP

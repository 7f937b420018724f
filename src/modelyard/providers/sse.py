"""An incremental server-sent-events decoder (the WHATWG event-stream format)."""

from __future__ import annotations

from modelyard.providers.base import SSEEvent


class SSEDecoder:
    """Feed raw bytes as they arrive; get complete events. Comments and ``id``/``retry`` are ignored."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        # Scan with an offset and keep the unfinished tail once at the end: slicing the buffer
        # after every line made one large chunk (a burst after a stall) cost O(n²) copying.
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                break
            line = buffer[start:newline]
            start = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(SSEEvent(b"\n".join(self._data), self._event))
                self._data = []
                self._event = None
                continue
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value.decode()
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """Flush an event left without its blank line at the end of the stream."""
        events = self.feed(b"\n\n") if (self._buffer or self._data) else []
        return events

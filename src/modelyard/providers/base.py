"""The provider interface: ``complete``, ``stream``, ``embed`` (optional) and ``aclose``.

A provider speaks exactly one wire protocol (:class:`WireProtocol`). Bodies handed to it are
*native* request bodies of that protocol, with ``model`` already set to the upstream's model
name; it returns native response bodies and native SSE events. Translation between protocols is
pure and lives in :mod:`modelyard.translate`, never here.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from modelyard.errors import UnsupportedCapabilityError

JSONDict = dict[str, Any]


class WireProtocol(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: ``data`` is the payload (without ``data: ``), ``event`` the name."""

    data: bytes
    event: str | None = None

    def encode(self) -> bytes:
        if self.event is None:
            return b"data: " + self.data + b"\n\n"
        return b"event: " + self.event.encode() + b"\ndata: " + self.data + b"\n\n"


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(slots=True)
class CallContext:
    """Per-call facts a provider may use: the request id (sent upstream for tracing) and limits."""

    request_id: str
    timeout_s: float = 600.0
    extra_headers: dict[str, str] = field(default_factory=dict)


class Provider(abc.ABC):
    """A model endpoint. Subclasses set ``protocol`` and implement ``complete`` and ``stream``."""

    protocol: WireProtocol
    name: str  # provider kind, e.g. "openai", "anthropic", "llamacpp", "fake"

    @abc.abstractmethod
    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        """One non-streaming call; returns the native response body. Raises UpstreamError."""

    async def complete_raw(self, body: JSONDict, ctx: CallContext) -> bytes:
        """Like ``complete`` but returns the response bytes as the upstream sent them.

        HTTP providers override this so same-protocol answers pass through byte for byte.
        """
        return orjson.dumps(await self.complete(body, ctx))

    @abc.abstractmethod
    def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        """A streaming call; yields native SSE events (OpenAI's final ``[DONE]`` included).

        Errors before the first event raise UpstreamError from the first ``__anext__``.
        """

    async def embed(self, inputs: list[str], model: str, ctx: CallContext) -> EmbeddingResult:
        raise UnsupportedCapabilityError(
            f"model {model!r} ({self.name}) does not serve embeddings; use an embedding model "
            "(GET /v1/models lists them)"
        )

    async def ready(self) -> bool:
        """Whether the provider can serve now (local models loaded)."""
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release connections, worker processes and other resources."""

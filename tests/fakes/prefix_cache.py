"""A fake Anthropic Messages upstream with a prompt cache, for affinity tests and benchmarks.

Like the real one, it caches a request's prefix — system prompt, tools and the first user turn —
when the request marks a block with ``cache_control``, for 5 minutes (or 1 hour with
``"ttl": "1h"``), refreshed on every read; each instance has its own cache, as each deployment of
a vendor region or each self-hosted server does. It answers in Anthropic's wire format (JSON or
SSE) with the usage block a real upstream sends: ``cache_creation_input_tokens`` (with the
``cache_creation`` 5m/1h split) on a miss, ``cache_read_input_tokens`` on a hit. Tokens are
counted as 4 bytes each.

A hit is faster, as prefill of a cached prefix is skipped: the answer waits ``base_ms``, plus
``miss_ms_per_ktok`` per thousand prefix tokens on a miss. Every request body is recorded
verbatim (``bodies``), so tests can check what reached the upstream byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import LoopbackServer

BYTES_PER_TOKEN = 4


def _has_cache_control(value: Any) -> tuple[bool, bool]:
    """(any cache_control, any with ttl 1h) anywhere in a JSON value."""
    raw = orjson.dumps(value)
    return b'"cache_control"' in raw, b'"ttl":"1h"' in raw


class PrefixCacheUpstream(LoopbackServer):
    """One fake deployment on 127.0.0.1; ``base_url`` goes into an ``anthropic`` deployment."""

    def __init__(self, *, api_key: str, base_ms: float = 5.0, miss_ms_per_ktok: float = 20.0) -> None:
        self.api_key = api_key
        self.base_ms = base_ms
        self.miss_ms_per_ktok = miss_ms_per_ktok
        self.bodies: list[bytes] = []
        self.hits = 0
        self.misses = 0
        self.uncached = 0
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "uncached": self.uncached}

    def reset(self) -> None:
        with self._lock:
            self.bodies.clear()
            self._cache.clear()
            self.hits = self.misses = self.uncached = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    # -- the cache ------------------------------------------------------------------------------
    def _usage(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(the usage block, whether the prefix was a cache hit)."""
        messages = body.get("messages") or []
        first_user = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
        prefix = orjson.dumps([body.get("system"), body.get("tools"), first_user])
        rest = orjson.dumps(
            messages[messages.index(first_user) + 1 :] if first_user in messages else messages
        )
        prefix_tokens = max(1, len(prefix) // BYTES_PER_TOKEN)
        input_tokens = max(1, len(rest) // BYTES_PER_TOKEN)
        cached, long_ttl = _has_cache_control([body.get("system"), body.get("tools"), first_user])
        usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": 3}
        if not cached:
            with self._lock:
                self.uncached += 1
            usage["input_tokens"] += prefix_tokens
            return usage, False
        key = hashlib.sha256(prefix).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key, 0.0) > now
            self._cache[key] = now + (3600.0 if long_ttl else 300.0)  # written or refreshed
            if hit:
                self.hits += 1
            else:
                self.misses += 1
        if hit:
            usage |= {"cache_read_input_tokens": prefix_tokens, "cache_creation_input_tokens": 0}
        else:
            split = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
            split["ephemeral_1h_input_tokens" if long_ttl else "ephemeral_5m_input_tokens"] = prefix_tokens
            usage |= {
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": prefix_tokens,
                "cache_creation": split,
            }
        return usage, hit

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        with self._lock:
            self.bodies.append(raw)
        if request.headers.get("x-api-key") != self.api_key:
            error = {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
            return web.json_response(error, status=401)
        body = orjson.loads(raw)
        usage, hit = self._usage(body)
        delay_ms = self.base_ms
        if not hit:
            delay_ms += self.miss_ms_per_ktok * (usage.get("cache_creation_input_tokens") or 0) / 1000
        await asyncio.sleep(delay_ms / 1000)
        text = "cached" if hit else "fresh"
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(message), content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            await response.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
        await response.write_eof()
        return response

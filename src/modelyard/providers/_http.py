"""What the HTTP providers share: the client session factory and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

from modelyard.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError
from modelyard.redact import Redactor


def new_session(connect_timeout_s: float) -> aiohttp.ClientSession:
    """One pooled session for all upstream calls of the process."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


@contextmanager
def map_transport_errors(provider: str, model: str, redact: Redactor) -> Iterator[None]:
    """Re-raise transport failures as our UpstreamError subclasses (httpx's habit)."""
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError(
            f"{provider} model {model!r} did not answer in time; raise timeout_s in the config if "
            "this model is slow",
            provider=provider,
            model=model,
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionError(
            f"cannot reach {provider} upstream for model {model!r}: {redact(str(exc))}",
            provider=provider,
            model=model,
        ) from exc


def error_from_response(
    status: int, body: bytes, headers: Any, provider: str, model: str, redact: Redactor
) -> UpstreamError:
    """Build an UpstreamError from an upstream's error answer (OpenAI or Anthropic shape)."""
    message = ""
    code: str | None = None
    upstream_type: str | None = None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or "")
        code = err.get("code") if isinstance(err.get("code"), str) else None
        upstream_type = err.get("type") if isinstance(err.get("type"), str) else None
    elif isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    if not message:
        message = body[:300].decode(errors="replace") or f"HTTP {status}"
    return UpstreamError(
        f"{provider} upstream error ({status}): {redact(message)}",
        status=status,
        provider=provider,
        model=model,
        headers={
            k: v for k, v in headers.items() if k.lower() in ("retry-after", "x-request-id", "request-id")
        },
        code=code,
        upstream_type=upstream_type,
    )

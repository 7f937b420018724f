"""Small shared mappings between the two wire protocols: ids, stop reasons, usage, error statuses.

Everything here is a pure function of its arguments (the id helpers draw from :mod:`secrets`).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from modelyard.providers.base import JSONDict

_ALNUM = string.ascii_letters + string.digits

# OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
_FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
_STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error ``type`` (in an ``event: error`` or an error body) -> the HTTP status we report.
# Anthropic's own 529 (overloaded) is reported as 503, the status every HTTP client understands.
_ANTHROPIC_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,
    "timeout_error": 504,
}

# OpenAI error ``type``/``code`` (in an error chunk some OpenAI-compatible servers stream) -> status.
_OPENAI_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "service_unavailable": 503,
    "overloaded_error": 503,
    "timeout": 504,
}


def _random_alnum(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def new_openai_id() -> str:
    """A fresh chat completion id: ``chatcmpl-`` and 29 random letters and digits."""
    return "chatcmpl-" + _random_alnum(29)


def new_anthropic_id() -> str:
    """A fresh message id: ``msg_`` and 24 random base62 characters."""
    return "msg_" + _random_alnum(24)


def new_tool_use_id() -> str:
    """A fresh tool use id (``toolu_`` + 24 base62), for upstream tool calls that came without one."""
    return "toolu_" + _random_alnum(24)


def map_finish_reason_to_anthropic(reason: str | None) -> str | None:
    """OpenAI ``finish_reason`` -> Anthropic ``stop_reason`` (``None`` stays ``None``).

    An unknown reason (some OpenAI-compatible servers invent their own, e.g. ``abort``) maps to
    ``end_turn`` so the caller always receives a value its SDK accepts.
    """
    if reason is None:
        return None
    return _FINISH_TO_STOP.get(reason, "end_turn")


def map_stop_reason_to_openai(reason: str | None) -> str | None:
    """Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (``None`` stays ``None``).

    An unknown reason maps to ``stop``.
    """
    if reason is None:
        return None
    return _STOP_TO_FINISH.get(reason, "stop")


def anthropic_error_status(error_type: str | None) -> int:
    """The HTTP status for an Anthropic error ``type`` (``overloaded_error`` -> 503, unknown -> 502)."""
    if error_type is None:
        return 502
    return _ANTHROPIC_ERROR_STATUS.get(error_type, 502)


def openai_error_status(error: JSONDict) -> int:
    """The HTTP status for an OpenAI-style ``error`` object streamed in place of a chunk.

    Uses a numeric ``code`` or ``status`` when the server sent one (vLLM and llama.cpp do),
    otherwise the ``type``/``code`` names; unknown errors are a 502 (the upstream misbehaved).
    """
    for key in ("status", "code"):
        value = error.get(key)
        if isinstance(value, int) and 400 <= value <= 599:
            return value
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value in _OPENAI_ERROR_STATUS:
            return _OPENAI_ERROR_STATUS[value]
    return 502


def as_int(value: Any) -> int:
    """A token count from a usage object: ints pass, anything else (None, missing) is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    return 0


def openai_cached_tokens(usage: JSONDict) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens`` of an OpenAI usage object, if present."""
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = details.get("cached_tokens")
        if isinstance(cached, int) and not isinstance(cached, bool):
            return cached
    return None


def openai_usage_to_anthropic(usage: JSONDict) -> JSONDict:
    """OpenAI usage -> Anthropic usage.

    Anthropic reports uncached input apart from cache reads, so cached tokens are subtracted from
    ``input_tokens`` and reported as ``cache_read_input_tokens`` (only when the upstream said).
    """
    prompt = as_int(usage.get("prompt_tokens"))
    cached = openai_cached_tokens(usage)
    result: JSONDict = {
        "input_tokens": max(prompt - (cached or 0), 0),
        "output_tokens": as_int(usage.get("completion_tokens")),
    }
    if cached is not None:
        result["cache_read_input_tokens"] = cached
    return result


def anthropic_usage_to_openai(usage: JSONDict) -> JSONDict:
    """Anthropic usage -> OpenAI usage.

    OpenAI's ``prompt_tokens`` counts all input, so it is ``input_tokens`` plus cache reads and
    cache writes; cache reads also go to ``prompt_tokens_details.cached_tokens``.
    """
    cache_read = as_int(usage.get("cache_read_input_tokens"))
    prompt = as_int(usage.get("input_tokens")) + cache_read + as_int(usage.get("cache_creation_input_tokens"))
    completion = as_int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }

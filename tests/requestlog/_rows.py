"""Building request rows for store-level tests."""

from __future__ import annotations

from typing import Any

from modelyard.store.requestlog import RequestRow


def request_row(request_id: str, **fields: Any) -> RequestRow:
    values: dict[str, Any] = {
        "request_id": request_id,
        "created_at": 1_000_000.0,
        "duration_ms": 120.0,
        "method": "POST",
        "path": "/v1/chat/completions",
        "operation": "chat",
        "dialect": "openai",
        "key_id": "k1",
        "key_hint": "myd_…abcd",
        "team_id": "team-a",
        "user_id": "user-a",
        "tags": ("alpha",),
        "model": "gpt-test",
        "deployment": "openai/gpt-test",
        "provider": "openai",
        "response_model": "gpt-test",
        "route": "primary",
        "local": False,
        "stream": False,
        "status": 200,
        "outcome": "ok",
        "error_type": None,
        "error_message": None,
        "tokens_in": 10,
        "tokens_out": 20,
        "tokens_cache_read": 0,
        "tokens_cache_write": 0,
        "cost_nano": 1_000,
        "ttft_ms": None,
        "overhead_ms": 1.5,
        "attempts": ({"deployment": "openai/gpt-test", "outcome": "ok", "status": 200},),
        "cache": None,
        "prompt": None,
        "response": None,
    }
    values.update(fields)
    return RequestRow(**values)

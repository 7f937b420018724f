"""Stop reasons, ids, usage and error statuses."""

from __future__ import annotations

import re

import pytest

from modelyard.translate import (
    map_finish_reason_to_anthropic,
    map_stop_reason_to_openai,
    new_anthropic_id,
    new_openai_id,
)
from modelyard.translate.mapping import (
    anthropic_error_status,
    anthropic_usage_to_openai,
    new_tool_use_id,
    openai_error_status,
    openai_usage_to_anthropic,
)


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, None),
        ("abort", "end_turn"),
    ],
)
def test_finish_reason_to_anthropic(finish: str | None, stop: str | None) -> None:
    assert map_finish_reason_to_anthropic(finish) == stop


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, None),
        ("something_new", "stop"),
    ],
)
def test_stop_reason_to_openai(stop: str | None, finish: str | None) -> None:
    assert map_stop_reason_to_openai(stop) == finish


def test_stop_reasons_round_trip_for_every_openai_reason() -> None:
    for finish in ("stop", "length", "tool_calls", "content_filter"):
        assert map_stop_reason_to_openai(map_finish_reason_to_anthropic(finish)) == finish


def test_ids_have_the_native_shapes_and_are_unique() -> None:
    openai_ids = {new_openai_id() for _ in range(200)}
    anthropic_ids = {new_anthropic_id() for _ in range(200)}
    assert len(openai_ids) == 200 and len(anthropic_ids) == 200
    assert all(re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", i) for i in openai_ids)
    assert all(re.fullmatch(r"msg_[A-Za-z0-9]{24}", i) for i in anthropic_ids)
    assert re.fullmatch(r"toolu_[A-Za-z0-9]{24}", new_tool_use_id())


def test_openai_usage_subtracts_cached_tokens_from_input() -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 1024}}
    assert openai_usage_to_anthropic(usage) == {
        "input_tokens": 176,
        "output_tokens": 30,
        "cache_read_input_tokens": 1024,
    }


def test_openai_usage_without_details_has_no_cache_field() -> None:
    assert openai_usage_to_anthropic({"prompt_tokens": 5, "completion_tokens": 2}) == {
        "input_tokens": 5,
        "output_tokens": 2,
    }


def test_openai_usage_tolerates_nulls() -> None:
    usage = {"prompt_tokens": None, "completion_tokens": None, "prompt_tokens_details": None}
    assert openai_usage_to_anthropic(usage) == {"input_tokens": 0, "output_tokens": 0}


def test_anthropic_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "output_tokens": 50,
    }
    assert anthropic_usage_to_openai(usage) == {
        "prompt_tokens": 1210,
        "completion_tokens": 50,
        "total_tokens": 1260,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


def test_anthropic_usage_with_null_cache_fields() -> None:
    usage = {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": None}
    assert anthropic_usage_to_openai(usage)["prompt_tokens"] == 3


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 503),
        ("api_error", 500),
        ("rate_limit_error", 429),
        ("invalid_request_error", 400),
        ("request_too_large", 413),
        ("timeout_error", 504),
        ("mystery_error", 502),
        (None, 502),
    ],
)
def test_anthropic_error_status(error_type: str | None, status: int) -> None:
    assert anthropic_error_status(error_type) == status


def test_openai_error_status_prefers_numeric_code_then_names() -> None:
    assert openai_error_status({"code": 503, "type": "server_error"}) == 503
    assert openai_error_status({"code": "rate_limit_exceeded", "type": "requests"}) == 429
    assert openai_error_status({"type": "server_error"}) == 500
    assert openai_error_status({"message": "?"}) == 502

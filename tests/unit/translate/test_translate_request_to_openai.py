"""anthropic_request_to_openai: an Anthropic Messages request for an OpenAI-format model."""

from __future__ import annotations

import orjson
import pytest

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict
from modelyard.translate import anthropic_request_to_openai

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _request(messages: list[JSONDict], **extra: object) -> JSONDict:
    return {"model": "local-qwen", "max_tokens": 1024, "messages": messages, **extra}


def test_minimal_text_request() -> None:
    out = anthropic_request_to_openai(_request([{"role": "user", "content": "Hello, Claude"}]))
    assert out == {
        "model": "local-qwen",
        "messages": [{"role": "user", "content": "Hello, Claude"}],
        "max_tokens": 1024,
    }


def test_system_string_becomes_leading_system_message() -> None:
    out = anthropic_request_to_openai(_request([{"role": "user", "content": "hi"}], system="Be terse."))
    assert out["messages"][0] == {"role": "system", "content": "Be terse."}


def test_system_text_blocks_are_joined_and_cache_control_dropped() -> None:
    system = [
        {"type": "text", "text": "You are a librarian."},
        {"type": "text", "text": "Catalogue: ...", "cache_control": {"type": "ephemeral"}},
    ]
    out = anthropic_request_to_openai(_request([{"role": "user", "content": "hi"}], system=system))
    assert out["messages"][0] == {"role": "system", "content": "You are a librarian.\n\nCatalogue: ..."}
    assert b"cache_control" not in orjson.dumps(out)


def test_system_with_non_text_block_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="text blocks"):
        anthropic_request_to_openai(_request([], system=[{"type": "image"}]))


def test_sampling_fields_are_mapped_and_anthropic_only_fields_dropped() -> None:
    out = anthropic_request_to_openai(
        _request(
            [{"role": "user", "content": "hi"}],
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["\n\nHuman:", "END"],
            metadata={"user_id": "user-42"},
            thinking={"type": "enabled", "budget_tokens": 2048},
            service_tier="auto",
        )
    )
    assert out["temperature"] == 0.2
    assert out["top_p"] == 0.9
    assert out["stop"] == ["\n\nHuman:", "END"]
    assert out["user"] == "user-42"
    for dropped in ("top_k", "thinking", "service_tier", "metadata", "stop_sequences"):
        assert dropped not in out


def test_stream_always_asks_for_usage() -> None:
    out = anthropic_request_to_openai(_request([{"role": "user", "content": "hi"}], stream=True))
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_non_stream_has_no_stream_options() -> None:
    out = anthropic_request_to_openai(_request([{"role": "user", "content": "hi"}], stream=False))
    assert out["stream"] is False
    assert "stream_options" not in out


def test_base64_and_url_images_become_image_url_parts() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Compare these."},
    ]
    out = anthropic_request_to_openai(_request([{"role": "user", "content": content}]))
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "Compare these."},
            ],
        }
    ]


def test_file_image_source_is_rejected_with_a_fix() -> None:
    content = [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}]
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[0\].*base64 or as a URL"):
        anthropic_request_to_openai(_request([{"role": "user", "content": content}]))


def test_single_text_block_is_sent_as_a_string() -> None:
    content = [{"type": "text", "text": "just text", "cache_control": {"type": "ephemeral"}}]
    out = anthropic_request_to_openai(_request([{"role": "user", "content": content}]))
    assert out["messages"] == [{"role": "user", "content": "just text"}]


def test_assistant_tool_use_becomes_tool_calls_with_ids_and_ordered_arguments() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and time in Tokyo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two tools.", "signature": "EqQBCgIYAh..."},
                {"type": "text", "text": "Let me check both."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "Paris", "unit": "celsius", "days": [1, 2]},
                },
                {"type": "tool_use", "id": "toolu_02B", "name": "get_time", "input": {"zone": "Asia/Tokyo"}},
            ],
        },
    ]
    out = anthropic_request_to_openai(_request(messages))
    assistant = out["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": "Let me check both.",
        "tool_calls": [
            {
                "id": "toolu_01A09q90qw90lq917835lq9",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"location":"Paris","unit":"celsius","days":[1,2]}',
                },
            },
            {
                "id": "toolu_02B",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"zone":"Asia/Tokyo"}'},
            },
        ],
    }


def test_assistant_with_only_tool_use_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
    ]
    out = anthropic_request_to_openai(_request(messages))
    assert out["messages"][1]["content"] is None
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tool_results_become_tool_messages_before_remaining_user_text() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "a", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "b", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Here you go, and please hurry."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "10:00"}, {"type": "text", "text": "JST"}],
                },
            ],
        },
    ]
    out = anthropic_request_to_openai(_request(messages))
    assert out["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "10:00\nJST"},
        {"role": "user", "content": "Here you go, and please hurry."},
    ]


def test_tool_result_only_message_has_no_empty_user_message() -> None:
    messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]
    out = anthropic_request_to_openai(_request(messages))
    assert out["messages"] == [{"role": "tool", "tool_call_id": "t", "content": "ok"}]


def test_tool_result_error_is_noted_in_the_content() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "no such city", "is_error": True}
            ],
        }
    ]
    out = anthropic_request_to_openai(_request(messages))
    assert out["messages"][0]["content"] == "[tool error] no such city"


def test_tool_result_without_content_is_empty_text() -> None:
    messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]
    assert anthropic_request_to_openai(_request(messages))["messages"][0]["content"] == ""


def test_tool_result_images_go_to_the_following_user_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}
    messages = [
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "shot",
                    "content": [{"type": "text", "text": "ok"}, image],
                }
            ],
        }
    ]
    out = anthropic_request_to_openai(_request(messages))
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "shot", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}],
        },
    ]


def test_tools_become_functions() -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
            "cache_control": {"type": "ephemeral"},
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    out = anthropic_request_to_openai(_request([{"role": "user", "content": "hi"}], tools=tools))
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": tools[0]["input_schema"],
            },
        },
        {
            "type": "function",
            "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert "tool_choice" not in out


def test_server_tools_are_rejected_with_a_fix() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
    with pytest.raises(InvalidRequestError, match=r"tools\[0\].*server tool.*remove it"):
        anthropic_request_to_openai(_request([{"role": "user", "content": "hi"}], tools=tools))


TOOL = {"name": "f", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            {"tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice(choice: JSONDict, expected: JSONDict) -> None:
    out = anthropic_request_to_openai(
        _request([{"role": "user", "content": "hi"}], tools=[TOOL], tool_choice=choice)
    )
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    out = anthropic_request_to_openai(
        _request([{"role": "user", "content": "hi"}], tool_choice={"type": "auto"})
    )
    assert "tool_choice" not in out and "parallel_tool_calls" not in out


def test_bad_tool_choice_names_the_allowed_values() -> None:
    with pytest.raises(InvalidRequestError, match="auto, any, tool, none"):
        anthropic_request_to_openai(
            _request([{"role": "user", "content": "hi"}], tools=[TOOL], tool_choice={"type": "x"})
        )


def test_system_role_inside_messages_is_rejected_with_a_fix() -> None:
    with pytest.raises(InvalidRequestError, match="top-level 'system'"):
        anthropic_request_to_openai(_request([{"role": "system", "content": "x"}]))


def test_missing_messages_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="messages"):
        anthropic_request_to_openai({"model": "m", "max_tokens": 5})


def test_unknown_user_block_is_rejected_naming_its_place() -> None:
    content = [{"type": "text", "text": "a"}, {"type": "container_upload", "file_id": "f"}]
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[1\].*'container_upload'"):
        anthropic_request_to_openai(_request([{"role": "user", "content": content}]))


def test_documents_become_file_or_text_parts() -> None:
    content = [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
    ]
    out = anthropic_request_to_openai(_request([{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "document.pdf"},
        },
        {"type": "text", "text": "plain doc"},
    ]


def test_input_is_not_mutated() -> None:
    body = _request(
        [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x", "is_error": True}],
            }
        ],
        system=[{"type": "text", "text": "s"}],
    )
    snapshot = orjson.dumps(body)
    anthropic_request_to_openai(body)
    assert orjson.dumps(body) == snapshot

"""openai_request_to_anthropic: an OpenAI chat.completions request for an Anthropic model."""

from __future__ import annotations

import orjson
import pytest

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict
from modelyard.translate import openai_request_to_anthropic


def _request(messages: list[JSONDict], **extra: object) -> JSONDict:
    return {"model": "claude-sonnet", "messages": messages, **extra}


def test_minimal_request_gets_default_max_tokens() -> None:
    out = openai_request_to_anthropic(_request([{"role": "user", "content": "Hello!"}]))
    assert out == {
        "model": "claude-sonnet",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 4096,
    }


def test_default_max_tokens_is_configurable() -> None:
    out = openai_request_to_anthropic(_request([{"role": "user", "content": "x"}]), default_max_tokens=99)
    assert out["max_tokens"] == 99


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    body = _request([{"role": "user", "content": "x"}], max_tokens=10, max_completion_tokens=20)
    assert openai_request_to_anthropic(body)["max_tokens"] == 20
    assert (
        openai_request_to_anthropic(_request([{"role": "user", "content": "x"}], max_tokens=10))["max_tokens"]
        == 10
    )


def test_system_and_developer_messages_merge_into_top_level_system() -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Late instruction."},
    ]
    out = openai_request_to_anthropic(_request(messages))
    assert out["system"] == "You are helpful.\n\nAnswer in French.\n\nLate instruction."
    assert out["messages"] == [{"role": "user", "content": "Hi"}]


def test_single_system_message_is_a_plain_string() -> None:
    out = openai_request_to_anthropic(
        _request([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    )
    assert out["system"] == "S"


def test_consecutive_same_role_messages_are_merged() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "a1"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "third"},
    ]
    out = openai_request_to_anthropic(_request(messages))
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a1"}, {"type": "text", "text": "a2"}]},
        {"role": "user", "content": "third"},
    ]


def test_tool_calls_and_grouped_tool_results() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris", "unit": "c"}'},
                },
                {
                    "id": "call_ABCD",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Tokyo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "content": "15C"},
        {"role": "tool", "tool_call_id": "call_ABCD", "content": [{"type": "text", "text": "22C"}]},
        {"role": "user", "content": "Thanks, which is warmer?"},
    ]
    out = openai_request_to_anthropic(_request(messages))
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "name": "get_weather",
                    "input": {"location": "Paris", "unit": "c"},
                },
                {
                    "type": "tool_use",
                    "id": "call_ABCD",
                    "name": "get_weather",
                    "input": {"location": "Tokyo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "content": "15C"},
                {"type": "tool_result", "tool_use_id": "call_ABCD", "content": "22C"},
                {"type": "text", "text": "Thanks, which is warmer?"},
            ],
        },
    ]
    assert list(out["messages"][1]["content"][0]["input"]) == ["location", "unit"]


def test_tool_results_come_first_even_after_user_text() -> None:
    messages = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "user", "content": "also this"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    out = openai_request_to_anthropic(_request(messages))
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_result", "text"]
    assert out["messages"][0]["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]


def test_assistant_text_and_tool_calls_keep_order() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}],
    }
    out = openai_request_to_anthropic(_request([{"role": "user", "content": "q"}, message]))
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
    ]


def test_invalid_tool_arguments_name_the_tool_call() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_bad", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
        ],
    }
    with pytest.raises(
        InvalidRequestError, match=r"messages\[1\]\.tool_calls\[0\].*'call_bad'.*not valid JSON"
    ):
        openai_request_to_anthropic(_request([{"role": "user", "content": "q"}, message]))


def test_non_object_tool_arguments_are_rejected() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
    }
    with pytest.raises(InvalidRequestError, match="not a JSON object"):
        openai_request_to_anthropic(_request([{"role": "user", "content": "q"}, message]))


def test_tool_error_marker_becomes_is_error() -> None:
    messages = [{"role": "tool", "tool_call_id": "c", "content": "[tool error] boom"}]
    out = openai_request_to_anthropic(_request(messages))
    assert out["messages"][0]["content"] == [
        {"type": "tool_result", "tool_use_id": "c", "is_error": True, "content": "boom"}
    ]


def test_images_data_and_https_urls() -> None:
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/cat.png"}},
    ]
    out = openai_request_to_anthropic(_request([{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/cat.png"}},
    ]


@pytest.mark.parametrize("url", ["data:image/png,rawbytes", "ftp://host/x.png", ""])
def test_bad_image_urls_are_rejected(url: str) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[0\]"):
        openai_request_to_anthropic(_request([{"role": "user", "content": content}]))


def test_pdf_file_part_becomes_document() -> None:
    content = [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"}}
    ]
    out = openai_request_to_anthropic(_request([{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    ]


def test_file_id_is_rejected_with_a_fix() -> None:
    content = [{"type": "file", "file": {"file_id": "file-abc"}}]
    with pytest.raises(InvalidRequestError, match="file_data"):
        openai_request_to_anthropic(_request([{"role": "user", "content": content}]))


def test_audio_part_is_rejected() -> None:
    content = [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]
    with pytest.raises(InvalidRequestError, match="'input_audio'"):
        openai_request_to_anthropic(_request([{"role": "user", "content": content}]))


def test_empty_text_parts_are_skipped() -> None:
    content = [{"type": "text", "text": ""}, {"type": "text", "text": "real"}]
    out = openai_request_to_anthropic(_request([{"role": "user", "content": content}]))
    assert out["messages"] == [{"role": "user", "content": "real"}]


@pytest.mark.parametrize(("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_becomes_stop_sequences(stop: object, expected: list[str]) -> None:
    out = openai_request_to_anthropic(_request([{"role": "user", "content": "x"}], stop=stop))
    assert out["stop_sequences"] == expected


def test_sampling_user_stream_and_dropped_fields() -> None:
    out = openai_request_to_anthropic(
        _request(
            [{"role": "user", "content": "x"}],
            temperature=0.7,
            top_p=0.5,
            user="u-1",
            stream=True,
            stream_options={"include_usage": True},
            seed=42,
            frequency_penalty=0.5,
            presence_penalty=0.1,
            logit_bias={"1": 2},
            n=1,
            logprobs=False,
        )
    )
    assert out["temperature"] == 0.7
    assert out["top_p"] == 0.5
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["stream"] is True
    for dropped in (
        "seed",
        "stream_options",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "n",
        "user",
    ):
        assert dropped not in out


def test_temperature_above_one_is_clamped() -> None:
    out = openai_request_to_anthropic(_request([{"role": "user", "content": "x"}], temperature=1.6))
    assert out["temperature"] == 1.0


def test_n_greater_than_one_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="n > 1 is not supported by Anthropic models") as info:
        openai_request_to_anthropic(_request([{"role": "user", "content": "x"}], n=2))
    assert info.value.param == "n"
    assert info.value.status == 400


@pytest.mark.parametrize("extra", [{"logprobs": True}, {"top_logprobs": 3}])
def test_logprobs_are_rejected(extra: JSONDict) -> None:
    with pytest.raises(InvalidRequestError, match=r"logprobs are not supported.*remove"):
        openai_request_to_anthropic(_request([{"role": "user", "content": "x"}], **extra))


def test_json_object_response_format_adds_a_system_instruction() -> None:
    body = _request(
        [{"role": "system", "content": "Extract data."}, {"role": "user", "content": "x"}],
        response_format={"type": "json_object"},
    )
    out = openai_request_to_anthropic(body)
    assert out["system"].startswith("Extract data.\n\nRespond with only a JSON object")


def test_json_schema_response_format_embeds_the_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    body = _request(
        [{"role": "user", "content": "x"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    out = openai_request_to_anthropic(body)
    assert out["system"] == (
        "Respond with only a JSON object matching this JSON schema, with no text before or after it: "
        + orjson.dumps(schema).decode()
    )


def test_text_response_format_adds_nothing() -> None:
    out = openai_request_to_anthropic(
        _request([{"role": "user", "content": "x"}], response_format={"type": "text"})
    )
    assert "system" not in out


FUNCTION_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        "strict": True,
    },
}


def test_tools_become_anthropic_tools() -> None:
    no_params = {"type": "function", "function": {"name": "ping"}}
    out = openai_request_to_anthropic(
        _request([{"role": "user", "content": "x"}], tools=[FUNCTION_TOOL, no_params])
    )
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


def test_custom_tools_are_rejected() -> None:
    with pytest.raises(InvalidRequestError, match=r"tools\[0\].*'custom'"):
        openai_request_to_anthropic(
            _request([{"role": "user", "content": "x"}], tools=[{"type": "custom", "custom": {}}])
        )


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_tool_choice_and_parallel_tool_calls(
    choice: object, parallel: bool | None, expected: JSONDict | None
) -> None:
    extra: JSONDict = {"tools": [FUNCTION_TOOL]}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    out = openai_request_to_anthropic(_request([{"role": "user", "content": "x"}], **extra))
    assert out.get("tool_choice") == expected


def test_bad_tool_choice_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="tool_choice"):
        openai_request_to_anthropic(
            _request([{"role": "user", "content": "x"}], tools=[FUNCTION_TOOL], tool_choice="always")
        )


def test_function_role_is_rejected_with_a_fix() -> None:
    with pytest.raises(InvalidRequestError, match="use tools and tool messages"):
        openai_request_to_anthropic(_request([{"role": "function", "name": "f", "content": "x"}]))


def test_tool_message_without_id_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="tool_call_id"):
        openai_request_to_anthropic(_request([{"role": "tool", "content": "x"}]))


def test_assistant_refusal_becomes_text() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "refusal": "I can't."},
    ]
    assert openai_request_to_anthropic(_request(messages))["messages"][1] == {
        "role": "assistant",
        "content": "I can't.",
    }


def test_assistant_reasoning_content_is_not_sent() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
    ]
    out = openai_request_to_anthropic(_request(messages))
    assert out["messages"][1] == {"role": "assistant", "content": "4"}


def test_input_is_not_mutated() -> None:
    body = _request(
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "tool", "tool_call_id": "c", "content": "[tool error] x"},
        ],
        stop="END",
    )
    snapshot = orjson.dumps(body)
    openai_request_to_anthropic(body)
    assert orjson.dumps(body) == snapshot

"""SSE decoding, redaction, master-key auth and error mapping."""

from __future__ import annotations

import pytest

from modelyard.errors import AuthenticationError, UpstreamError
from modelyard.policy.auth import Authenticator
from modelyard.providers.base import SSEEvent
from modelyard.providers.sse import SSEDecoder
from modelyard.redact import Redactor


def test_sse_decoder_handles_split_chunks_crlf_comments_and_multiline() -> None:
    raw = (
        b': keep-alive\r\nevent: message_start\r\ndata: {"a":1}\r\n\r\n'
        b"data: line1\ndata: line2\n\ndata: [DONE]"
    )
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(raw), 3):  # feed in awkward 3-byte pieces
        events += decoder.feed(raw[i : i + 3])
    events += decoder.close()
    assert events == [
        SSEEvent(b'{"a":1}', "message_start"),
        SSEEvent(b"line1\nline2"),
        SSEEvent(b"[DONE]"),
    ]


def test_sse_event_encoding_round_trips() -> None:
    for event in (SSEEvent(b'{"x":1}'), SSEEvent(b'{"type":"ping"}', "ping")):
        assert SSEDecoder().feed(event.encode()) == [event]


def test_redactor_masks_known_secrets_and_key_shapes() -> None:
    redact = Redactor(["hunter2-secret-value"])
    text = (
        "key sk-abcdefghijklmnop and sk-ant-api03-XYZXYZXYZXYZ, Bearer abc.def.ghijkl, hunter2-secret-value"
    )
    out = redact(text)
    for secret in (
        "sk-abcdefghijklmnop",
        "sk-ant-api03-XYZXYZXYZXYZ",
        "abc.def.ghijkl",
        "hunter2-secret-value",
    ):
        assert secret not in out
    assert out.count("[REDACTED]") == 4


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"authorization": "Bearer right-key"}, True),
        ({"authorization": "bearer right-key"}, True),
        ({"x-api-key": "right-key"}, True),
        ({"api-key": "right-key"}, True),
        ({"authorization": "Bearer wrong-key"}, False),
        ({"authorization": "Basic right-key"}, False),
        ({"x-api-key": "right-key-but-longer"}, False),
        ({}, False),
    ],
)
async def test_master_key_auth(headers: dict[str, str], ok: bool) -> None:
    auth = Authenticator("right-key", store=None)
    if ok:
        principal = await auth.authenticate(headers)
        assert principal.is_master
    else:
        with pytest.raises(AuthenticationError) as info:
            await auth.authenticate(headers)
        assert "right-key" not in info.value.message


async def test_no_master_key_means_open() -> None:
    assert (await Authenticator(None, store=None).authenticate({})).role.value == "admin"


@pytest.mark.parametrize(
    ("status", "openai_type", "anthropic_type", "caller_status"),
    [
        (400, "invalid_request_error", "invalid_request_error", 400),
        (401, "api_error", "api_error", 502),  # our upstream credentials failed: not the caller's fault
        (429, "rate_limit_error", "rate_limit_error", 429),
        (500, "api_error", "api_error", 500),
        (529, "api_error", "overloaded_error", 529),
    ],
)
def test_upstream_error_mapping(
    status: int, openai_type: str, anthropic_type: str, caller_status: int
) -> None:
    err = UpstreamError("boom", status=status, provider="openai", model="m", headers={"Retry-After": "3"})
    assert (err.status, err.openai_type, err.anthropic_type) == (caller_status, openai_type, anthropic_type)
    assert err.retry_after == "3"

"""``conversation_id`` (or the ``x-modelyard-conversation`` header) on /v1/chat/completions and
/v1/messages with both official SDKs: the gateway prepends the stored history (the fake upstream
records what reached the model), appends each answer, keeps going across models and protocols,
keeps tenants apart, and lets the admin API list, read, delete and purge."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conversations.conftest import new_key
from tests.fakes import FakeUpstream


def _cid() -> str:
    return "conv-" + uuid.uuid4().hex


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def _stored(http: httpx.Client, cid: str) -> dict[str, Any]:
    r = http.get(f"/admin/conversations/{cid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_openai_conversation_history_reaches_the_model(oa: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    cid = _cid()
    first = oa.chat.completions.create(
        model="echo",
        messages=[{"role": "system", "content": "be kind"}, {"role": "user", "content": "I am Ada"}],
        extra_body={"conversation_id": cid},
    )
    assert first.choices[0].message.content == "echo: I am Ada"
    fake_openai.clear()
    oa.chat.completions.create(
        model="oa-text",
        messages=[{"role": "user", "content": "who am I?"}],
        extra_body={"conversation_id": cid},
    )
    sent = fake_openai.last().json
    assert "conversation_id" not in sent  # a gateway field, never forwarded
    assert sent["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "echo: I am Ada"},
        {"role": "user", "content": "who am I?"},
    ]


def test_header_names_the_conversation(oa: openai.OpenAI, http: httpx.Client) -> None:
    cid = _cid()
    for text in ("one", "two"):
        oa.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": text}],
            extra_headers={"x-modelyard-conversation": cid},
        )
    stored = _stored(http, cid)
    assert stored["turns"] == 2
    assert [m["content"] for m in stored["messages"]] == ["one", "echo: one", "two", "echo: two"]


def test_anthropic_conversation_and_streaming(an: anthropic.Anthropic, fake_anthropic: FakeUpstream) -> None:
    cid = _cid()
    first = an.messages.create(
        model="an-echo",
        max_tokens=50,
        system="be brief",
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"conversation_id": cid},
    )
    assert first.content[0].type == "text" and first.content[0].text == "echo: hello"
    with an.messages.stream(
        model="an-echo",
        max_tokens=50,
        messages=[{"role": "user", "content": "again"}],
        extra_body={"conversation_id": cid},
    ) as stream:
        assert stream.get_final_text() == "echo: again"
    fake_anthropic.clear()
    an.messages.create(
        model="an-text",
        max_tokens=50,
        messages=[{"role": "user", "content": "third"}],
        extra_body={"conversation_id": cid},
    )
    sent = fake_anthropic.last().json
    assert sent["system"] == "be brief"
    texts = [
        m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in sent["messages"]
    ]
    assert texts == ["hello", "echo: hello", "again", "echo: again", "third"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user", "assistant", "user"]


def test_cross_protocol_conversation(
    an: anthropic.Anthropic, oa: openai.OpenAI, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    """Turn 1 on /v1/messages (an Anthropic-protocol model), turn 2 on /v1/chat/completions (an
    OpenAI-protocol model), turn 3 back on /v1/messages: each model gets the whole history."""
    cid = _cid()
    an.messages.create(
        model="an-text",
        max_tokens=50,
        messages=[{"role": "user", "content": "turn one"}],
        extra_body={"conversation_id": cid},
    )
    fake_openai.clear()
    second = oa.chat.completions.create(
        model="oa-text",
        messages=[{"role": "user", "content": "turn two"}],
        extra_body={"conversation_id": cid},
    )
    sent = fake_openai.last().json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "turn one" and sent[1]["content"] and sent[2]["content"] == "turn two"
    fake_anthropic.clear()
    an.messages.create(
        model="an-echo",
        max_tokens=50,
        messages=[{"role": "user", "content": "turn three"}],
        extra_body={"conversation_id": cid},
    )
    an.messages.create(
        model="an-text",
        max_tokens=50,
        messages=[{"role": "user", "content": "turn four"}],
        extra_body={"conversation_id": cid},
    )
    sent = fake_anthropic.last().json["messages"]
    assert len(sent) == 7
    assert _text(sent[3]) == second.choices[0].message.content
    assert _text(sent[5]) == "echo: turn three"


def test_tool_calls_are_kept_across_protocols(
    oa: openai.OpenAI, an: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    cid = _cid()
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    first = oa.chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "look it up"}],
        tools=[tool],
        extra_body={"conversation_id": cid},
    )
    call = first.choices[0].message.tool_calls[0]
    fake_anthropic.clear()
    an.messages.create(
        model="an-text",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "found it"}],
            }
        ],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        extra_body={"conversation_id": cid},
    )
    sent = fake_anthropic.last().json["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"][0]["type"] == "tool_use"
    assert sent[1]["content"][0]["id"] == call.id and sent[1]["content"][0]["input"] == {"q": "test"}
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["tool_use_id"] == call.id


@pytest.mark.parametrize("model", ["cut", "boom"])
def test_failed_answers_append_nothing(oa: openai.OpenAI, http: httpx.Client, model: str) -> None:
    cid = _cid()
    oa.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "kept"}], extra_body={"conversation_id": cid}
    )
    try:
        for _ in oa.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "lost"}],
            stream=True,
            extra_body={"conversation_id": cid},
        ):
            pass
    except openai.APIError:
        pass
    stored = _stored(http, cid)
    assert stored["turns"] == 1
    assert [m["content"] for m in stored["messages"]] == ["kept", "echo: kept"]


def test_streamed_answer_is_stored_before_the_stream_ends(oa: openai.OpenAI, http: httpx.Client) -> None:
    cid = _cid()
    chunks = oa.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "a b c"}],
        stream=True,
        extra_body={"conversation_id": cid},
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b c"
    assert [m["content"] for m in _stored(http, cid)["messages"]] == ["a b c", "echo: a b c"]


def test_tenant_isolation(gw: Any, http: httpx.Client) -> None:
    cid = _cid()
    key_a, key_a_id = new_key(http, team_id="team-a")
    key_b, _ = new_key(http, team_id="team-b")
    with (
        openai.OpenAI(base_url=gw.url + "/v1", api_key=key_a, max_retries=0, timeout=10) as a,
        openai.OpenAI(base_url=gw.url + "/v1", api_key=key_b, max_retries=0, timeout=10) as b,
        anthropic.Anthropic(base_url=gw.url, api_key=key_b, max_retries=0, timeout=10) as b_an,
    ):
        a.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "private"}],
            extra_body={"conversation_id": cid},
        )
        with pytest.raises(openai.NotFoundError) as info:
            b.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "x"}], extra_body={"conversation_id": cid}
            )
        assert "private" not in info.value.message
        with pytest.raises(anthropic.NotFoundError) as an_info:
            b_an.messages.create(
                model="an-echo",
                max_tokens=5,
                messages=[{"role": "user", "content": "x"}],
                extra_body={"conversation_id": cid},
            )
        assert an_info.value.body["error"]["type"] == "not_found_error"
        # Each key-holder lists only its own; the other's is a 404 on the admin API too.
        listed = httpx.get(
            gw.url + "/admin/conversations", headers={"authorization": f"Bearer {key_a}"}
        ).json()
        assert [c["id"] for c in listed["data"]] == [cid] and listed["data"][0]["key_id"] == key_a_id
        assert (
            httpx.get(gw.url + "/admin/conversations", headers={"authorization": f"Bearer {key_b}"}).json()[
                "data"
            ]
            == []
        )
        assert (
            httpx.get(
                gw.url + f"/admin/conversations/{cid}", headers={"authorization": f"Bearer {key_b}"}
            ).status_code
            == 404
        )
        assert (
            httpx.delete(
                gw.url + f"/admin/conversations/{cid}", headers={"authorization": f"Bearer {key_b}"}
            ).status_code
            == 404
        )
        a.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "still mine"}],
            extra_body={"conversation_id": cid},
        )
    assert _stored(http, cid)["turns"] == 2


def test_admin_delete_and_purge(oa: openai.OpenAI, http: httpx.Client, fake_openai: FakeUpstream) -> None:
    cid = _cid()
    oa.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "old"}], extra_body={"conversation_id": cid}
    )
    r = http.delete(f"/admin/conversations/{cid}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert http.get(f"/admin/conversations/{cid}").status_code == 404
    # The same id now starts afresh: no history reaches the model.
    fake_openai.clear()
    oa.chat.completions.create(
        model="oa-text", messages=[{"role": "user", "content": "new"}], extra_body={"conversation_id": cid}
    )
    assert fake_openai.last().json["messages"] == [{"role": "user", "content": "new"}]
    # Purge everything older than 0 days: this conversation (and every stored response) goes.
    r = http.post("/admin/conversations/purge", json={"older_than_days": 0})
    assert r.status_code == 200 and r.json()["purged"] >= 1
    assert http.get(f"/admin/conversations/{cid}").status_code == 404


def test_admin_roles(gw: Any, http: httpx.Client) -> None:
    key, _ = new_key(http)
    h = {"authorization": f"Bearer {key}"}
    assert httpx.post(gw.url + "/admin/conversations/purge", json={}, headers=h).status_code == 403
    assert http.post("/admin/conversations/purge", json={"older_than_days": -1}).status_code == 400
    assert http.get("/admin/conversations", params={"limit": "0"}).status_code == 400
    assert http.put("/admin/conversations").status_code == 405


@pytest.mark.parametrize(
    ("extra", "headers", "status"),
    [
        ({"conversation_id": 42}, {}, 400),
        ({"conversation_id": ""}, {}, 400),
        ({"conversation_id": "has space"}, {}, 400),
        ({"conversation_id": "a" * 201}, {}, 400),
        ({"conversation_id": "one"}, {"x-modelyard-conversation": "two"}, 400),
    ],
)
def test_bad_conversation_ids(
    http: httpx.Client, extra: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}
    r = http.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == "conversation_id"
    r = http.post(
        "/v1/messages",
        json={**body, "model": "an-echo", "max_tokens": 5},
        headers={**headers, "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == status and r.json()["type"] == "error"


def test_a_rotated_key_keeps_its_conversations(gw: Any, http: httpx.Client) -> None:
    cid = _cid()
    old_key, old_id = new_key(http, team_id="team-r")
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=old_key, max_retries=0, timeout=10) as old:
        old.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "before"}],
            extra_body={"conversation_id": cid},
        )
    r = http.post(f"/admin/keys/{old_id}/rotate", json={"overlap_s": 0})
    assert r.status_code == 201, r.text
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=r.json()["key"], max_retries=0, timeout=10) as new:
        new.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "after"}], extra_body={"conversation_id": cid}
        )
    assert _stored(http, cid)["turns"] == 2


def test_streams_translated_across_protocols_are_stored(
    oa: openai.OpenAI, an: anthropic.Anthropic, http: httpx.Client
) -> None:
    """An Anthropic client streaming from an OpenAI-protocol model, then an OpenAI client streaming
    from an Anthropic-protocol model: both answers, rebuilt from the translated streams, are stored."""
    cid = _cid()
    with an.messages.stream(
        model="echo",
        max_tokens=20,
        messages=[{"role": "user", "content": "first"}],
        extra_body={"conversation_id": cid},
    ) as stream:
        assert stream.get_final_text() == "echo: first"
    chunks = oa.chat.completions.create(
        model="an-echo",
        messages=[{"role": "user", "content": "second"}],
        stream=True,
        extra_body={"conversation_id": cid},
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: second"
    stored = _stored(http, cid)
    assert [m["content"] for m in stored["messages"]] == ["first", "echo: first", "second", "echo: second"]

"""PII detectors, the text a rule sees in either API's body, and how rules combine."""

from __future__ import annotations

import pytest

from modelyard.config.routes_schema import RuleConfig, RuleWhen
from modelyard.routing.smart.rules import (
    RequestFacts,
    detect_pii,
    evaluate,
    iban_ok,
    iter_texts,
    luhn_ok,
    prompt_text,
    request_facts,
    request_text,
)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("write to jane.doe+news@mail.example.co.uk today", {"email"}),
        ("call +1 415 555 0132 after six", {"phone"}),
        ("call (415) 555-0132", {"phone"}),
        ("mobile 07700 900123", {"phone"}),
        ("ring +442071838750", {"phone"}),
        ("card 4111 1111 1111 1111 exp 12/29", {"card"}),
        ("card 5500-0000-0000-0004", {"card"}),
        ("pay to GB82 WEST 1234 5698 7654 32 please", {"iban"}),
        ("IBAN DE89370400440532013000", {"iban"}),
        ("SSN 078-05-1120 on file", {"ssn"}),
    ],
)
def test_each_detector_finds_its_kind(text: str, kinds: set[str]) -> None:
    assert kinds <= detect_pii(text)


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 2024-05-17 at 10:30.",
        "Version 1.2.3.4 of the server at 10.0.0.12",
        "There were 1234567890 grains of sand",  # a bare number is not a phone number
        "card 4111 1111 1111 1112",  # fails Luhn
        "GB82 WEST 1234 5698 7654 33",  # fails mod-97
        "ssn 000-12-3456 and 666-12-3456 are never issued",
        "an @ sign alone, user@localhost",
        "What is 12 * 34?",
    ],
)
def test_lookalikes_are_not_pii(text: str) -> None:
    assert detect_pii(text) == set()


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111121")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765431")


OPENAI_BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "system text"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "block text"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"who": "args text"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "tool result text"},
    ],
    "metadata": {"note": "metadata text"},
}
ANTHROPIC_BODY = {
    "model": "auto",
    "max_tokens": 10,
    "system": [{"type": "text", "text": "system block"}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "user block"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "4111111111111111"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"key text": "input text"}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "result block"}],
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "document text"},
                }
            ],
        },
    ],
}


def test_every_text_of_an_openai_body_is_seen_and_no_image_bytes() -> None:
    texts = set(iter_texts(OPENAI_BODY))
    for needle in ("system text", "block text", '{"who": "args text"}', "tool result text", "metadata text"):
        assert needle in texts
    assert not any(t.startswith("data:") for t in texts)


def test_every_text_of_an_anthropic_body_is_seen_and_no_base64_data() -> None:
    texts = set(iter_texts(ANTHROPIC_BODY))
    for needle in ("system block", "user block", "key text", "input text", "result block", "document text"):
        assert needle in texts
    assert "4111111111111111" not in texts  # base64 image data: digits there are not a card


def test_prompt_text_is_the_last_user_text() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ]
    }
    assert prompt_text(body) == "second"
    assert prompt_text({"messages": []}) == ""


def rule(
    name: str, action: str = "local_only", models: list[str] | None = None, **when: object
) -> RuleConfig:
    return RuleConfig(name=name, when=RuleWhen(**when), action=action, models=models or [])  # type: ignore[arg-type]


def test_rules_combine_and_name_what_matched() -> None:
    rules = [
        rule("pii", pii=["email"]),
        rule("tagged", tags=["confidential"]),
        rule("eu", action="restrict", models=["a", "b"], metadata={"region": "eu"}),
        rule("team-x", action="block", team=["x"]),
    ]
    clean = evaluate(rules, "nothing here", RequestFacts())
    assert not clean.local_only and clean.allowed is None and clean.blocked_by is None and clean.matched == ()
    hit = evaluate(rules, "a@b.io", RequestFacts(tags=frozenset({"confidential"}), metadata={"region": "eu"}))
    assert hit.local_only and hit.allowed == {"a", "b"}
    assert hit.matched == ("pii(email)", "tagged(tag:confidential)", "eu(metadata)")
    assert evaluate(rules, "", RequestFacts(team="x")).blocked_by == "team-x"


def test_all_conditions_of_one_rule_must_hold() -> None:
    both = [rule("both", pii=["email"], tags=["confidential"])]
    assert not evaluate(both, "a@b.io", RequestFacts()).local_only
    assert evaluate(both, "a@b.io", RequestFacts(tags=frozenset({"confidential"}))).local_only


def test_an_unscannably_large_request_counts_as_matching() -> None:
    huge = "x" * 2_000_001
    assert evaluate([rule("pii", pii=["email"])], huge, RequestFacts()).local_only


def test_request_facts_from_header_metadata_and_key() -> None:
    class Key:
        id, name, team_id = "k1", "ci", "t1"
        tags = ("from-key",)
        metadata = {"region": "eu"}

    class Principal:
        key = Key()

    body = {"metadata": {"tags": "confidential, internal", "project": "p"}}
    facts = request_facts(body, {"x-modelyard-tags": "hdr"}, Principal())
    assert facts.tags == {"confidential", "internal", "hdr", "from-key"}
    assert facts.metadata == {"region": "eu", "project": "p", "tags": "confidential, internal"}
    assert facts.team == "t1" and facts.key_ids == {"k1", "ci"}
    assert "a@b.io" in request_text({"messages": [{"role": "user", "content": "a@b.io"}]})

"""The semantic cache through a real gateway, with the real embedding model (all-MiniLM-L6-v2).

``sem`` runs at the recommended threshold (``target_precision`` 0.9 → 0.96, the default).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest

from modelyard.providers.embeddings import find_embedding_files

try:
    find_embedding_files()
except FileNotFoundError as missing:  # pragma: no cover - the lock installs both packages
    pytest.skip(f"the embedding model is not installed: {missing}", allow_module_level=True)

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def ask(oa: openai.OpenAI, model: str, messages: list[Any], **kw: Any) -> tuple[str, str]:
    raw = oa.chat.completions.with_raw_response.create(model=model, messages=messages, **kw)
    message = raw.parse().choices[0].message
    text = message.content or "".join(c.function.name for c in message.tool_calls or [])
    return raw.headers["x-modelyard-cache"], text


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def settle() -> None:
    time.sleep(0.1)  # writes (and index updates) happen just after the answer


def test_a_paraphrase_hits_and_returns_the_first_answer(oa: openai.OpenAI) -> None:
    tag = uuid.uuid4().hex[:6]  # a fresh system prompt: a fresh partition for this run
    system = {"role": "system", "content": f"You are support agent {tag}."}
    state, first = ask(oa, "sem", [system, *user("How do I reset my password?")])
    assert state == "miss" and first == "echo: How do I reset my password?"
    settle()
    state, answer = ask(oa, "sem", [system, *user("How can I reset my password?")])
    assert (state, answer) == ("hit", first)
    # An unrelated question in the same partition misses.
    assert ask(oa, "sem", [system, *user("What are your opening hours?")])[0] == "miss"


def test_a_gsm8k_problem_with_other_numbers_misses(oa: openai.OpenAI) -> None:
    system = {"role": "system", "content": f"Solve it. {uuid.uuid4().hex[:6]}"}
    problem = (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?"
    )
    assert ask(oa, "sem", [system, *user(problem)])[0] == "miss"
    settle()
    changed = problem.replace("48", "52")  # embeddings alone score this 0.99 against the original
    assert ask(oa, "sem", [system, *user(changed)])[0] == "miss"
    assert ask(oa, "sem", [system, *user(problem.replace("sold clips", "sold some clips"))])[0] == "hit"


def test_a_follow_up_matches_only_after_the_same_conversation(oa: openai.OpenAI) -> None:
    system = {"role": "system", "content": f"Geography tutor {uuid.uuid4().hex[:6]}"}

    def turns(country: str, city: str, follow_up: str) -> list[Any]:
        return [
            system,
            *user(f"What is the capital of {country}?"),
            {"role": "assistant", "content": f"{city}."},
            *user(follow_up),
        ]

    assert ask(oa, "sem", turns("France", "Paris", "What is its population?"))[0] == "miss"
    settle()
    # The same follow-up after another first question: different context, no hit.
    assert ask(oa, "sem", turns("Germany", "Berlin", "What is its population?"))[0] == "miss"
    # Without any earlier turns the follow-up is a first question: another partition, no hit.
    assert ask(oa, "sem", [system, *user("What is its population?")])[0] == "miss"
    # The same conversation, the follow-up paraphrased: a hit.
    assert ask(oa, "sem", turns("France", "Paris", "What's its population?"))[0] == "hit"


@pytest.mark.parametrize(("model", "expected"), [("sem-tools", "miss"), ("sem-tools-on", "hit")])
def test_requests_with_tools_skip_the_semantic_cache_unless_enabled(
    oa: openai.OpenAI, model: str, expected: str
) -> None:
    # Fixed wording (cosine 0.992; a random tag in the text would move it around the threshold);
    # each model is its own partition and the gateway starts empty.
    assert ask(oa, model, user("Where is my most recent order?"), tools=TOOLS)[0] == "miss"
    settle()
    assert ask(oa, model, user("Where's my most recent order?"), tools=TOOLS)[0] == expected
    # The exact cache still serves exact repeats either way.
    assert ask(oa, model, user("Where is my most recent order?"), tools=TOOLS)[0] == "hit"


def test_semantic_hits_stay_within_a_tenant_and_are_booked_as_such(cached_gateway: Any, admin: Any) -> None:
    clients = []
    for team in ("green", "amber"):
        response = admin.post("/admin/keys", json={"name": f"sem-{team}", "team_id": f"team-{team}"})
        assert response.status_code == 201, response.text
        clients.append(
            openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key=response.json()["key"], max_retries=0)
        )
    green, amber = clients
    with green, amber:
        assert ask(green, "sem", user("How do I reset my password?"))[0] == "miss"
        settle()
        # The other team: neither the same words nor a paraphrase reach green's answer.
        assert ask(amber, "sem", user("How can I reset my password?"))[0] == "miss"
        raw = green.chat.completions.with_raw_response.create(
            model="sem", messages=user("How can I reset my password?")
        )
        assert raw.headers["x-modelyard-cache"] == "hit"
        assert raw.headers["x-modelyard-deployment"] == "cache:semantic"
    request_id = raw.headers["x-request-id"]
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while not rows and time.monotonic() < deadline:
        rows = admin.get("/admin/ledger", params={"request_id": request_id}).json()["data"]
        time.sleep(0.05)
    assert [(r["deployment"], r["cost_nano"], r["status"]) for r in rows] == [("cache:semantic", 0, "ok")]

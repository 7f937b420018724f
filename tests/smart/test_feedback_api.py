"""``model="auto"`` through the official SDKs, the decision header, ``POST /v1/feedback`` (stored,
learned from, surviving a restart) and what each kind of bad feedback gets, in each API's shape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import MASTER_KEY
from tests.smart.conftest import AUTH

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def http(smart_gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=smart_gateway.url, headers=AUTH, timeout=10) as client:
        yield client


def posterior(http: httpx.Client, route: str, model: str, task: str = "(none)") -> dict[str, float]:
    routes = {r["route"]: r for r in http.get("/admin/routes").json()["routes"]}
    return routes[route]["bandit"]["posteriors"].get(task, {}).get(model, {})


def test_auto_answers_through_the_openai_sdk_with_its_decision_in_a_header(
    smart_gateway: GatewayServer, fake_openai: FakeUpstream
) -> None:
    with openai.OpenAI(base_url=smart_gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)  # type: ignore[arg-type]
        answer = raw.parse()
        assert answer.choices[0].message.content == "The capital of France is Paris."
        # quality_target 0.8: local-small (0.6) falls short, cloud-mini (0.85) is the cheapest that meets it
        assert raw.headers["x-modelyard-decision"] == "auto -> cloud-mini; reason=target; q=0.85/target=0.8"
        assert raw.headers["x-modelyard-deployment"] == "openai/rec-text"
        tagged = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=HELLO,
            extra_headers={"x-modelyard-tags": "confidential"},  # type: ignore[arg-type]
        )
        assert tagged.headers["x-modelyard-decision"].startswith(
            "auto -> local-small; reason=best+rule:confidential"
        )
        stream = client.chat.completions.create(model="auto", messages=HELLO, stream=True)  # type: ignore[arg-type]
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_auto_answers_through_the_anthropic_sdk(smart_gateway: GatewayServer) -> None:
    with anthropic.Anthropic(base_url=smart_gateway.url, api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=50,
            messages=[{"role": "user", "content": "My SSN is 078-05-1120, file it"}],
        )
        message = raw.parse()
        assert (
            message.content[0].type == "text" and "078-05-1120" in message.content[0].text
        )  # echoed locally
        assert raw.headers["x-modelyard-decision"].startswith(
            "auto -> local-small; reason=best+rule:personal-data"
        )
        assert "rules=personal-data(ssn)" in raw.headers["x-modelyard-decision"]
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            client.messages.create(
                model="cloudy", max_tokens=5, messages=[{"role": "user", "content": "mail bob@corp.example"}]
            )
        assert "personal-data(email)" in refused.value.message


def test_decisions_are_counted_in_metrics_and_in_the_request_log(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO})
    request_id = response.headers["x-request-id"]
    refused = http.post(
        "/v1/chat/completions", json={"model": "cloudy", "messages": [{"role": "user", "content": "x@y.io"}]}
    )
    assert refused.status_code == 403
    metrics = http.get("/metrics").text
    assert 'modelyard_smart_route_decisions_total{model="cloud-mini",reason="target",route="auto"}' in metrics
    assert 'modelyard_smart_route_decisions_total{model="",reason="refused",route="cloudy"}' in metrics
    row: dict[str, Any] = {}
    for _ in range(100):
        found = http.get(f"/admin/requests/{request_id}")
        if found.status_code == 200:
            row = found.json()
            break
        time.sleep(0.05)
    assert row["request"]["model"] == "cloud-mini"  # the request log names the model the route chose


def test_feedback_is_stored_learned_from_and_can_be_replaced(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "call +1 415 555 0132"}]},
    )
    request_id = response.headers["x-request-id"]
    before = posterior(http, "auto", "local-small").get("n", 0)
    first = http.post("/v1/feedback", json={"request_id": request_id, "thumbs": "up", "comment": "fine"})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "object": "feedback",
        "request_id": request_id,
        "score": 1.0,
        "replaced": False,
        "learned": True,
        "route": "auto",
        "model": "local-small",
        "task": None,
    }
    up = posterior(http, "auto", "local-small")
    assert up["n"] == before + 1
    second = http.post("/feedback", json={"request_id": request_id, "score": 0.0, "metadata": {"by": "qa"}})
    assert second.status_code == 200 and second.json()["replaced"] is True
    down = posterior(http, "auto", "local-small")
    assert down["n"] == up["n"] and down["mean"] < up["mean"]


def test_a_key_may_only_judge_its_own_requests(http: httpx.Client) -> None:
    keys = [http.post("/admin/keys", json={"name": f"fb-{i}"}).json()["key"] for i in range(2)]
    owner, other = ({"authorization": f"Bearer {k}"} for k in keys)
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=owner)
    request_id = response.headers["x-request-id"]
    denied = http.post("/v1/feedback", json={"request_id": request_id, "score": 1}, headers=other)
    assert denied.status_code == 404
    assert denied.json()["error"]["type"] == "not_found_error"  # the same answer as an unknown id
    assert (
        http.post("/v1/feedback", json={"request_id": request_id, "score": 1}, headers=owner).status_code
        == 200
    )
    assert http.post("/v1/feedback", json={"request_id": request_id, "score": 1}).status_code == 200  # master
    anonymous = http.post(
        "/v1/feedback", json={"request_id": request_id, "score": 1}, headers={"authorization": ""}
    )
    assert anonymous.status_code == 401


BAD_FEEDBACK: list[tuple[Any, int, str | None]] = [
    ({}, 400, "request_id"),
    ({"request_id": 7, "score": 1}, 400, "request_id"),
    ({"request_id": "REQ"}, 400, "score"),
    ({"request_id": "REQ", "score": 1, "thumbs": "up"}, 400, "score"),
    ({"request_id": "REQ", "score": 1.5}, 400, "score"),
    ({"request_id": "REQ", "score": -0.1}, 400, "score"),
    ({"request_id": "REQ", "score": "0.5"}, 400, "score"),
    ({"request_id": "REQ", "score": True}, 400, "score"),
    ({"request_id": "REQ", "thumbs": "meh"}, 400, "thumbs"),
    ({"request_id": "REQ", "score": 1, "comment": "x" * 4001}, 400, "comment"),
    ({"request_id": "REQ", "score": 1, "metadata": ["not", "an", "object"]}, 400, "metadata"),
    ({"request_id": "REQ", "score": 1, "stars": 5}, 400, "stars"),
    ({"request_id": "req_unknown", "score": 1}, 404, None),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_FEEDBACK)
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_bad_feedback_gets_a_clear_error_in_the_callers_shape(
    http: httpx.Client, body: dict[str, Any], status: int, param: str | None, dialect: str
) -> None:
    real = http.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO}).headers[
        "x-request-id"
    ]
    if body.get("request_id") == "REQ":
        body = {**body, "request_id": real}
    headers = {"anthropic-version": "2023-06-01"} if dialect == "anthropic" else {}
    response = http.post("/v1/feedback", json=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    if dialect == "anthropic":
        assert error["type"] == "error"
        assert error["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    else:
        assert error["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
        assert error["error"]["param"] == param


def test_feedback_that_is_not_json_or_not_a_post(http: httpx.Client) -> None:
    broken = http.post("/v1/feedback", content=b"{nope", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    assert http.get("/v1/feedback").status_code == 405


def test_feedback_and_learning_survive_a_restart(
    tmp_path: Path, start_gateway: Callable[[Path], GatewayServer]
) -> None:
    db = tmp_path / "modelyard.db"
    first = start_gateway(db)
    with httpx.Client(base_url=first.url, headers=AUTH, timeout=10) as http:
        ids = []
        for _ in range(3):
            response = http.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "a@b.io"}]},
            )
            ids.append(response.headers["x-request-id"])
        for request_id in ids[:2]:
            assert (
                http.post("/v1/feedback", json={"request_id": request_id, "thumbs": "up"}).status_code == 200
            )
        learned = posterior(http, "auto", "local-small")
    first.stop()
    time.sleep(0.2)
    second = start_gateway(db)
    with httpx.Client(base_url=second.url, headers=AUTH, timeout=10) as http:
        assert posterior(http, "auto", "local-small") == learned  # rebuilt from the stored feedback
        # A decision made before the restart is found in the store: its feedback still counts.
        late = http.post("/v1/feedback", json={"request_id": ids[2], "thumbs": "up"})
        assert (
            late.status_code == 200
            and late.json()["learned"] is True
            and late.json()["model"] == "local-small"
        )
        assert posterior(http, "auto", "local-small")["n"] == learned["n"] + 1


def test_key_model_allow_lists_and_routes(http: httpx.Client) -> None:
    """A key allowed ``auto`` may use whatever auto chooses (not the models directly); a key allowed
    only some models gets auto's choice among those."""
    route_only = http.post("/admin/keys", json={"models": ["auto"]}).json()["key"]
    small_only = http.post("/admin/keys", json={"models": ["local-small"]}).json()["key"]
    ask = {"model": "auto", "messages": HELLO}
    via_route = http.post("/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {route_only}"})
    assert via_route.status_code == 200 and via_route.headers["x-modelyard-decision"].startswith(
        "auto -> cloud-mini"
    )
    direct = http.post(
        "/v1/chat/completions",
        json={**ask, "model": "cloud-mini"},
        headers={"authorization": f"Bearer {route_only}"},
    )
    assert direct.status_code == 403
    narrowed = http.post("/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {small_only}"})
    assert narrowed.status_code == 200 and narrowed.headers["x-modelyard-decision"].startswith(
        "auto -> local-small"
    )


def test_routes_are_listed_as_models(smart_gateway: GatewayServer) -> None:
    with openai.OpenAI(base_url=smart_gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        ids = {m.id for m in client.models.list()}
        assert {"auto", "cloudy", "mixy", "local-small"} <= ids
        assert client.models.retrieve("auto").owned_by == "modelyard-route"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database (the gateway keeps its tables in ``public``)."""
    from tests.store._support import throwaway_postgres_database

    yield from throwaway_postgres_database("modelyard_smart")


def test_feedback_survives_a_restart_on_postgresql(
    postgres_database: str, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    from tests.fakes.config import ENVIRON
    from tests.smart.conftest import smart_config

    text = smart_config(Path("unused.db"), fake_openai, fake_anthropic).replace(
        'storage: {database: "sqlite:///unused.db"}', "storage: {database: env:SMART_TEST_PG}"
    )
    assert "env:SMART_TEST_PG" in text
    environ = {**ENVIRON, "SMART_TEST_PG": postgres_database}
    first = GatewayServer(text, environ).start()
    try:
        with httpx.Client(base_url=first.url, headers=AUTH, timeout=10) as http:
            ask = {"model": "auto", "messages": [{"role": "user", "content": "iban DE89370400440532013000"}]}
            ids = [http.post("/v1/chat/completions", json=ask).headers["x-request-id"] for _ in range(2)]
            assert http.post("/v1/feedback", json={"request_id": ids[0], "score": 0.9}).status_code == 200
            learned = posterior(http, "auto", "local-small")
    finally:
        first.stop()
    second = GatewayServer(text, environ).start()
    try:
        with httpx.Client(base_url=second.url, headers=AUTH, timeout=10) as http:
            assert posterior(http, "auto", "local-small") == learned
            late = http.post("/v1/feedback", json={"request_id": ids[1], "thumbs": "down"})
            assert late.status_code == 200 and late.json()["model"] == "local-small"
    finally:
        second.stop()

"""``conversations: {enabled: false}``: a request naming a conversation or a previous response gets
a clear 400, and nothing is stored (a Responses answer is still served, with ``store: false``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conversations.conftest import ENVIRON, MASTER_H, gateway_yaml
from tests.fakes import GatewayServer


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    db: Path = tmp_path_factory.mktemp("conv-off") / "gw.db"
    text = gateway_yaml(f'"sqlite:///{db}"', extra="conversations: {enabled: false}")
    server = GatewayServer(text, ENVIRON).start()
    try:
        with httpx.Client(base_url=server.url, headers=MASTER_H, timeout=10) as client:
            yield client
    finally:
        server.stop()


def test_conversation_requests_are_refused(http: httpx.Client) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "conversation_id": "c1"}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "conversations.enabled" in r.json()["error"]["message"]
    r = http.post(
        "/v1/chat/completions",
        json={**body, "conversation_id": None},
        headers={"x-modelyard-conversation": "c1"},
    )
    assert r.status_code == 400
    r = http.post("/v1/responses", json={"model": "echo", "input": "hi", "previous_response_id": "resp_x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"


def test_responses_are_served_but_not_stored(http: httpx.Client) -> None:
    r = http.post("/v1/responses", json={"model": "echo", "input": "hi"})
    assert r.status_code == 200 and r.json()["store"] is False
    assert http.get(f"/v1/responses/{r.json()['id']}").status_code == 404
    assert (
        http.post(
            "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "plain"}]}
        ).status_code
        == 200
    )

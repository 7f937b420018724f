"""The request log through a real in-process gateway (SQLite): one row per request with the right
fields, prompt capture per key and globally, the admin API's filters, drill-down and roles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.gateway import GatewayServer

MASTER = "mk-reqlog-5a6b7c8d9e"
CONFIG = """\
server: {{master_key: env:MK}}
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
request_log: {{capture_prompts: {capture}, retention_days: 7}}
models:
  - name: echo
    deployments: [{{provider: fake, model: echo, pricing: {{input_per_mtok: 1000, output_per_mtok: 2000}}}}]
  - name: an-echo
    deployments: [{{provider: fake, model: echo, protocol: anthropic,
                   pricing: {{input_per_mtok: 500, output_per_mtok: 500}}}}]
  - name: boom
    routing: {{max_attempts: 2, breaker: {{consecutive_failures: 1000}}}}
    deployments: [{{provider: fake, model: error-503}}]
"""
MASTER_H = {"authorization": f"Bearer {MASTER}"}


def _start(tmp: Path, *, capture: bool) -> GatewayServer:
    return GatewayServer(
        CONFIG.format(db=tmp / "db.sqlite", capture=str(capture).lower()), {"MK": MASTER}
    ).start()


def _key(client: httpx.Client, **body: Any) -> tuple[str, str]:
    r = client.post("/admin/keys", json=body, headers=MASTER_H)
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


def _chat(client: httpx.Client, key: str, model: str, text: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    return client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def _rows(client: httpx.Client, expected: int, **params: str) -> list[dict[str, Any]]:
    """The stored rows once ``expected`` are there (the sink writes off the hot path)."""
    deadline = time.monotonic() + 10
    while True:
        r = client.get("/admin/requests", params={"limit": "1000", **params}, headers=MASTER_H)
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["data"]
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _wait_for_ledger(client: httpx.Client, request_ids: list[str]) -> None:
    """Settlements are committed in batches too: wait until every request has its ledger rows."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = client.get("/admin/ledger", params={"limit": "10000"}, headers=MASTER_H).json()["data"]
        if set(request_ids) <= {r["request_id"] for r in rows}:
            return
        time.sleep(0.05)
    raise AssertionError("ledger rows did not appear")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    server = _start(tmp_path_factory.mktemp("reqlog"), capture=False)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        capture_key, capture_id = _key(client, name="cap", team_id="t1", tags=["alpha"], store_prompts=True)
        plain_key, plain_id = _key(client, name="plain", team_id="t2", user_id="u2")
        viewer_key, _ = _key(client, role="viewer")
        ids: dict[str, Any] = {"capture": (capture_key, capture_id), "plain": (plain_key, plain_id)}
        ids["viewer"] = viewer_key
        responses = [
            _chat(client, capture_key, "echo", "tell me <b>secret</b> plans"),
            _chat(client, capture_key, "echo", "stream this please", stream=True),
            _chat(client, capture_key, "boom", "will fail"),
            _chat(client, plain_key, "echo", "not for the log"),
            client.post(
                "/v1/messages",
                json={
                    "model": "an-echo",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "hi there"}],
                },
                headers={"x-api-key": plain_key, "anthropic-version": "2023-06-01"},
            ),
        ]
        assert [r.status_code for r in responses] == [200, 200, 503, 200, 200]
        ids["request_ids"] = [r.headers["x-request-id"] for r in responses]
        _rows(client, 5)
        _wait_for_ledger(client, ids["request_ids"])
        yield client, ids
    server.stop()


def test_one_row_per_request_with_the_right_fields(gw: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, ids = gw
    rows = {r["request_id"]: r for r in _rows(client, 5)}
    plain, stream, fail, other, anthropic = (rows[i] for i in ids["request_ids"])
    assert len(rows) == 5
    cap_id, plain_id = ids["capture"][1], ids["plain"][1]
    assert (plain["key_id"], plain["team_id"], plain["tags"], plain["model"]) == (
        cap_id,
        "t1",
        ["alpha"],
        "echo",
    )
    assert (plain["deployment"], plain["status"], plain["outcome"], plain["error_type"]) == (
        "fake/echo",
        200,
        "ok",
        None,
    )
    assert plain["tokens_in"] > 0 and plain["tokens_out"] > 0 and plain["cost_nano"] > 0
    assert plain["key_hint"].startswith("myd_") and plain["route"] == "primary" and not plain["stream"]
    assert stream["stream"] and stream["ttft_ms"] is not None and stream["outcome"] == "ok"
    assert (fail["status"], fail["outcome"], fail["error_type"], fail["cost_nano"]) == (
        503,
        "error",
        "provider",
        0,
    )
    assert len(fail["attempts"]) == 2 and all(a["status"] == 503 for a in fail["attempts"])
    assert "503" in fail["error_message"]
    assert (other["key_id"], other["team_id"], other["user_id"]) == (plain_id, "t2", "u2")
    assert (anthropic["dialect"], anthropic["path"], anthropic["model"]) == (
        "anthropic",
        "/v1/messages",
        "an-echo",
    )
    for row in rows.values():  # the stored cost is the ledger's
        detail = client.get(f"/admin/requests/{row['request_id']}", headers=MASTER_H).json()
        assert row["cost_nano"] == sum(a["cost_nano"] for a in detail["ledger"])
        assert len(detail["ledger"]) == len(row["attempts"])


def test_prompts_are_captured_only_for_keys_that_store_them(gw: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, ids = gw

    def detail(index: int) -> dict[str, Any]:
        r = client.get(f"/admin/requests/{ids['request_ids'][index]}", headers=MASTER_H)
        assert r.status_code == 200
        return r.json()["request"]  # type: ignore[no-any-return]

    first, streamed, plain = detail(0), detail(1), detail(3)
    assert (
        "tell me <b>secret</b> plans" in first["prompt"]
        and first["response"] == "echo: tell me <b>secret</b> plans"
    )
    assert "stream this please" in streamed["prompt"] and "stream this please" in streamed["response"]
    assert (
        first["captured"] and plain["prompt"] is None and plain["response"] is None and not plain["captured"]
    )


def test_search_filters_and_text(gw: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, ids = gw
    cap_id, plain_id = ids["capture"][1], ids["plain"][1]
    req = ids["request_ids"]

    def found(**params: str) -> list[str]:
        return [r["request_id"] for r in _rows(client, 0, **params)]

    assert sorted(found(key=cap_id)) == sorted(req[:3])
    assert sorted(found(team="t2")) == sorted(req[3:])
    assert found(model="boom") == [req[2]]
    assert found(deployment="fake/error-503") == [req[2]]
    assert found(status="503") == [req[2]]
    assert sorted(found(status="ok")) == sorted(req[:2] + req[3:])
    assert found(q="SECRET") == [req[0]]
    assert found(q="not for the log") == []  # not captured, so not searchable
    assert found(since=str(time.time() + 60)) == []
    assert len(found(limit="2")) == 2
    r = client.get("/admin/requests", params={"limit": "0"}, headers=MASTER_H)
    assert r.status_code == 400
    assert plain_id


def test_roles(gw: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, ids = gw
    plain_key, plain_id = ids["plain"]
    req = ids["request_ids"]
    viewer = {"authorization": f"Bearer {ids['viewer']}"}
    assert len(client.get("/admin/requests", headers=viewer).json()["data"]) == 5
    assert client.get(f"/admin/requests/{req[0]}", headers=viewer).status_code == 200
    holder = {"authorization": f"Bearer {plain_key}"}
    mine = client.get("/admin/requests", params={"key": ids["capture"][1]}, headers=holder).json()["data"]
    assert mine == []  # a key-holder's search is confined to its own key, whatever it asks
    mine = client.get("/admin/requests", headers=holder).json()["data"]
    assert sorted(r["request_id"] for r in mine) == sorted(req[3:]) and {r["key_id"] for r in mine} == {
        plain_id
    }
    assert client.get(f"/admin/requests/{req[0]}", headers=holder).status_code == 404
    assert client.get(f"/admin/requests/{req[3]}", headers=holder).status_code == 200
    assert client.get("/admin/requests").status_code == 401
    assert client.post("/admin/requests", headers=MASTER_H).status_code == 405


def test_global_capture_stores_every_prompt(tmp_path: Path) -> None:
    server = _start(tmp_path, capture=True)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            key, _ = _key(client, name="no-capture-flag")
            rid = _chat(client, key, "echo", "captured anyway myd_AAAAAAAAAAAAAAAAAAAAAAAA").headers[
                "x-request-id"
            ]
            _rows(client, 1)
            row = client.get(f"/admin/requests/{rid}", headers=MASTER_H).json()["request"]
            assert "captured anyway" in row["prompt"] and "captured anyway" in row["response"]
            assert "myd_AAAA" not in row["prompt"] and "[REDACTED]" in row["prompt"]  # key-shaped text
    finally:
        server.stop()

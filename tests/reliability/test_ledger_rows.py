"""The ledger side of rows A10, B1, B2 and B4: every request the client saw has its row, with the
tokens that were really generated, whether the stream completed, was cut, or the client left."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import gateway_process

CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
models:
  - name: echo
    deployments: [{{provider: fake, model: echo}}]
  - name: drip
    deployments: [{{provider: fake, model: drip-100}}]
  - name: slow
    deployments: [{{provider: fake, model: slow-600}}]
  - name: cut
    deployments: [{{provider: fake, model: stream-cut-4}}]
"""
PROMPT = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("ledger-rows")
    db = work / "ledger.db"
    with gateway_process(work, CONFIG.format(db=db)) as (url, _log):
        yield url, db


def rows(db: Path, request_id: str, timeout: float = 5.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            found = [
                dict(r) for r in conn.execute("SELECT * FROM ledger WHERE request_id = ?", (request_id,))
            ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_b4_stream_usage_is_exactly_the_upstreams(gw: tuple[str, Path]) -> None:
    """B4: include_usage is injected upstream; the row holds the upstream's own numbers, and the
    caller (who did not ask for usage) does not see the usage chunk."""
    url, db = gw
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
        raw = b"".join(response.iter_raw())
        request_id = response.headers["x-request-id"]
    assert b'"usage"' not in raw and raw.endswith(b"data: [DONE]\n\n")
    plain = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False}, timeout=10).json()[
        "usage"
    ]
    (row,) = rows(db, request_id)
    assert (row["tokens_in"], row["tokens_out"], row["status"]) == (
        plain["prompt_tokens"],
        plain["completion_tokens"],
        "ok",
    )


def test_b1_client_disconnect_mid_stream_is_billed(gw: tuple[str, Path]) -> None:
    """B1: the client leaves after two chunks of a slow stream: one row, status client_disconnect,
    with the prompt and the tokens relayed so far (never zero once a chunk was sent)."""
    url, db = gw
    host, port = url.removeprefix("http://").split(":")
    payload = orjson.dumps(
        {"model": "drip", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(65536)
    request_id = received.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    (row,) = rows(db, request_id)
    assert row["status"] == "client_disconnect"
    assert int(row["tokens_out"]) >= 1 and int(row["tokens_in"]) >= 1  # type: ignore[call-overload]


def test_b2_client_disconnect_during_a_plain_call_is_billed_in_full(gw: tuple[str, Path]) -> None:
    """B2: the client gives up while the upstream works; the upstream's answer is still recorded."""
    url, db = gw
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url + "/v1/chat/completions",
            timeout=httpx.Timeout(10, read=0.2),
            json={"model": "slow", "messages": [{"role": "user", "content": PROMPT}]},
        )
    time.sleep(1.0)
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT status, tokens_in, tokens_out FROM ledger WHERE deployment = 'fake/slow-600'"
        ).fetchall()
    assert found == [("ok", 10, 11)]  # "echo: " + the 10 words: the fake's whole answer


def test_a10_cut_stream_is_recorded_as_cut_with_partial_usage(gw: tuple[str, Path]) -> None:
    """A10: the upstream drops the stream mid-answer; the client gets an error event (no [DONE]),
    the row says upstream_cut and counts the tokens relayed."""
    url, db = gw
    body = {"model": "cut", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
        raw = b"".join(response.iter_raw())
        request_id = response.headers["x-request-id"]
    assert b'"error"' in raw and b"[DONE]" not in raw
    (row,) = rows(db, request_id)
    assert row["status"] == "upstream_cut" and int(row["tokens_out"]) >= 1  # type: ignore[call-overload]

"""Every inference request leaves a ledger record, refused ones included (issue 4; DESIGN invariant 3).

A request refused before any upstream attempt — 401 bad key, 403 model not allowed, 429 rate limit,
429 budget — gets exactly one ledger row: attempt 0, status ``refused``, its HTTP status, the reason
in ``route_reason``, cost 0. Budgets are untouched, nothing of a presented bad key is stored, and a
flood of refusals is batched and bounded (dropped with a counter) rather than stalling the store's
writer. Through a real gateway and the official SDK, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from modelyard.policy.refused import RefusedLedger, refusal_reason
from modelyard.store.base import BudgetSpec, Period, Scope, Settlement
from modelyard.telemetry.metrics import GatewayMetrics
from modelyard.telemetry.record import AttemptInfo, RequestRecord
from tests.fakes.gateway import GatewayServer
from tests.store._support import Backend, settlement, throwaway_postgres_database
from tests.store.conftest import backend

__all__ = ["backend"]  # the store suite's fixture: SQLite, and PostgreSQL in a throw-away schema

MASTER = "mk-refused-4b1f9e27"
BAD_KEY = "myd_ThisKeyIsNotRealButLooksLikeOne0123456789abcd"
CONFIG = """\
server: {{master_key: env:MK}}
embedded_models: false
cloud_models_from_env: false
storage: {{database: {database}}}
models:
  - name: echo
    deployments:
      - {{provider: fake, model: echo, pricing: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}}}
  - name: other
    deployments: [{{provider: fake, model: echo}}]
"""


def record(request_id: str, status: int, **fields: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": request_id,
        "started_at": time.time(),
        "duration_ms": 0.4,
        "method": "POST",
        "path": "/v1/chat/completions",
        "operation": "chat",
        "dialect": "openai",
        "status": status,
        "outcome": "error",
        "error_type": "policy",
        "error_message": "no",
        "model_requested": "echo",
        "deployment": None,
        "provider": None,
        "response_model": None,
        "route": None,
        "local": False,
        "stream": False,
        "tokens_in": 0,
        "tokens_out": 0,
        "tokens_cache_read": 0,
        "tokens_cache_write": 0,
        "cost_nano": 0,
        "ttft_ms": None,
        "overhead_ms": 0.1,
        "key_id": "key_1",
        "key_hint": "myd_…abcd",
        "team_id": "team-a",
        "user_id": None,
        "tags": (),
    }
    return RequestRecord(**(base | fields))


# -- the sink, on each store backend ----------------------------------------------------------------
def test_reasons() -> None:
    assert [refusal_reason(s, None) for s in (401, 403, 429, 400, 404, 503)] == [
        "unauthorized",
        "forbidden",
        "rate_limited",
        "invalid_request",
        "not_found",
        "unavailable",
    ]
    assert refusal_reason(429, "budget_exceeded: the total budget ...") == "budget_exceeded"


async def test_each_refusal_is_one_row_and_budgets_are_untouched(backend: Backend) -> None:
    store = await backend.open()
    try:
        await store.set_budget(BudgetSpec(Scope.KEY, "key_1", Period.TOTAL, 10**9))
        sink = RefusedLedger(store, flush_interval_s=0.01)
        sink.start()
        for status in (401, 403, 429):
            sink.emit(record(f"req-{status}", status, key_id=None if status == 401 else "key_1"))
        sink.emit(record("req-429b", 429, error_message="budget_exceeded: the total budget"))
        # Not refusals: an answered request (it has attempts), a 200, an admin call.
        served = AttemptInfo("fake/echo", "fake", "echo", False, "error", 500, 3.0, time.time())
        sink.emit(record("req-served", 500, attempts=(served,)))
        sink.emit(record("req-ok", 200))
        sink.emit(record("req-admin", 401, operation="admin", path="/admin/keys"))
        await sink.aclose()
        await store.flush()
        rows = {r.request_id: r for r in await store.ledger_rows(limit=100)}
        assert set(rows) == {"req-401", "req-403", "req-429", "req-429b"}
        for status in (401, 403, 429):
            row = rows[f"req-{status}"]
            assert (row.attempt, row.status, row.http_status, row.cost_nano, row.deployment) == (
                0,
                "refused",
                status,
                0,
                "",
            )
        assert rows["req-401"].key_id is None and rows["req-403"].key_id == "key_1"
        assert [rows[i].route_reason for i in ("req-401", "req-403", "req-429", "req-429b")] == [
            "refused:unauthorized",
            "refused:forbidden",
            "refused:rate_limited",
            "refused:budget_exceeded",
        ]
        (budget,) = await store.budgets(Scope.KEY, "key_1")
        assert (budget.spend_nano, budget.reserved_nano) == (0, 0)
        # Spend reports count served requests; refused ones show when asked for by status.
        assert await store.spend_report(group_by="key", since=0) == []
        by_status = await store.spend_report(group_by="status", since=0)
        assert [(r["group"], r["requests"], r["cost_nano"]) for r in by_status] == [("refused", 4, 0)]
    finally:
        await store.aclose()


async def test_a_flood_is_batched_bounded_and_does_not_stall_real_settlements(backend: Backend) -> None:
    store = await backend.open()
    writes: list[int] = []
    real_settle = store.settle

    async def counting_settle(settlement: Settlement) -> None:
        writes.append(len(settlement.rows))
        await real_settle(settlement)

    store.settle = counting_settle  # type: ignore[method-assign]
    try:
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry)
        sink = RefusedLedger(
            store, max_queue=3000, flush_interval_s=0.05, on_drop=metrics.ledger_refused_dropped.inc
        )
        sink.start()
        started = time.perf_counter()
        for i in range(20_000):  # a burst of bad-key requests, faster than any writer
            sink.emit(record(f"flood-{i}", 401, key_id=None))
        emit_s = time.perf_counter() - started
        assert sink.queued == 3000 and sink.dropped == 17_000
        # ... and the drops are visible in /metrics, not only in a log line.
        assert registry.get_sample_value("modelyard_ledger_refused_dropped_total") == 17_000
        assert emit_s < 1.0  # constant work per refusal, no I/O (generous for a shared machine)
        # A real request's settlement, queued behind the flood, still commits promptly.
        await store.settle(settlement("real-1", 5))
        await asyncio.wait_for(store.flush(), 10)
        await sink.aclose()
        await store.flush()
        assert sorted(writes) == [1, 1000, 2000]  # 3,000 refused rows in two writes
        stored = await store.ledger_rows(limit=10_000)
        assert len(stored) == 3001
    finally:
        await store.aclose()


# -- through a real gateway ----------------------------------------------------------------------
class Gateway:
    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=20)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, headers={"authorization": f"Bearer {MASTER}"}, **kwargs)

    def new_key(self, **body: Any) -> dict[str, Any]:
        response = self.admin("POST", "/admin/keys", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def ledger(self, request_id: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            rows = self.admin("GET", "/admin/ledger", params={"request_id": request_id}).json()["data"]
            if rows or time.monotonic() > deadline:
                return list(rows)
            time.sleep(0.05)


def _pg_database() -> Iterator[str]:
    return throwaway_postgres_database("modelyard_refused")


@pytest.fixture(params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    databases: Iterator[str] | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        databases = _pg_database()
        url = next(databases)
    server = GatewayServer(CONFIG.format(database="env:DB"), {"MK": MASTER, "DB": url}).start()
    try:
        yield Gateway(server), url
    finally:
        server.stop()
        if databases is not None:
            next(databases, None)


def _call(gw: Gateway, key: str, model: str = "echo") -> tuple[int, str]:
    client = openai.OpenAI(base_url=gw.server.url + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        return raw.status_code, raw.headers["x-request-id"]
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.headers["x-request-id"]


def test_every_refusal_through_the_gateway_leaves_exactly_one_row(gw: tuple[Gateway, str]) -> None:
    gateway, url = gw
    limited = str(gateway.new_key(name="limited", rpm=1)["key"])
    narrow = str(gateway.new_key(name="narrow", models=["other"])["key"])
    broke = gateway.new_key(name="broke", budgets=[{"period": "total", "limit_usd": 0.000001}])
    cases = {
        "unauthorized": (BAD_KEY, "echo", 401),
        "forbidden": (narrow, "echo", 403),
        "budget_exceeded": (str(broke["key"]), "echo", 429),
    }
    assert _call(gateway, limited)[0] == 200
    cases["rate_limited"] = (limited, "echo", 429)  # its second request in the minute
    for reason, (key, model, status) in cases.items():
        got, request_id = _call(gateway, key, model)
        assert got == status, reason
        rows = gateway.ledger(request_id)
        assert len(rows) == 1, reason
        (row,) = rows
        assert (row["status"], row["http_status"], row["cost_nano"], row["attempt"]) == (
            "refused",
            status,
            0,
            0,
        )
        assert row["route_reason"] == f"refused:{reason}"
    budgets = gateway.admin("GET", "/admin/budgets", params={"scope": "key", "scope_id": broke["id"]}).json()
    (budget,) = budgets["data"]
    assert (budget["spend_usd"], budget["reserved_usd"]) == ("0", "0")
    if url.startswith("sqlite:///"):
        gateway.server.stop()  # the file is complete once the gateway has shut down
        dump = "\n".join(sqlite3.connect(url.removeprefix("sqlite:///")).iterdump())
        assert BAD_KEY not in dump and BAD_KEY[4:20] not in dump

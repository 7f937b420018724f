#!/usr/bin/env python3
"""How long each dashboard and request-log query takes with 1,000,000 requests (and 1,000,000
ledger rows) in the database: SQLite (a temp file) and PostgreSQL (a temporary schema).

Rows are spread evenly over the last 7 days (about 1.65 requests/s) from 200 keys in 20 teams
(a key belongs to one team; each key uses 3 of 6 models), 9 deployments; 10 % errors, 10 %
fallbacks, about 25 % local, 5 % with captured prompts. Requests go in
through ``Store.write_requests`` (the sink's own path, rollups included), ledger rows by
``executemany``/``COPY``. Each query is one the dashboard or ``GET /admin/requests`` runs; the
figure is the median of 5 runs (after one warm-up), in milliseconds. Target: < 200 ms each.

  .venv/bin/python benchmarks/dashboard_queries.py                 # both backends, 1M rows
  .venv/bin/python benchmarks/dashboard_queries.py --rows 100000 --backend sqlite

Environment: MODELYARD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test); the schema
``modelyard_bench_<pid>`` is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from modelyard.dashboard import data
from modelyard.store import _sql
from modelyard.store.base import Store
from modelyard.store.requestlog import RequestQuery, RequestRow

DAY = 86400
RANGES = {"15m": 900, "1h": 3600, "24h": DAY, "7d": 7 * DAY}
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "local", "llama-70b"]
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def make_rows(n: int, now: float, seed: int = 7) -> tuple[list[RequestRow], list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    rows, ledger = [], []
    start = now - 7 * DAY
    for i in range(n):
        at = start + (7 * DAY) * i / n
        key_no = rng.randrange(200)
        model = MODELS[(key_no + rng.randrange(3)) % len(MODELS)]
        local = model == "local" or (model == "llama-70b" and i % 2 == 0)
        deployment = (
            ("llamacpp/" if local else "openai/") + model + ("-b" if model == "gpt-4o" and i % 2 else "")
        )
        key = f"key_{key_no:03d}"
        team = f"team-{key_no % 20}"
        error = rng.random() < 0.1
        captured = rng.random() < 0.05
        tokens_in, tokens_out = rng.randint(20, 2000), 0 if error else rng.randint(5, 800)
        cost = 0 if local or error else tokens_in * 150 + tokens_out * 600
        duration = rng.lognormvariate(6.0, 0.8)
        rid = f"req_{i:012d}"
        rows.append(
            RequestRow(
                request_id=rid, created_at=at, duration_ms=duration, method="POST",
                path="/v1/chat/completions", operation="chat", dialect="openai", key_id=key,
                key_hint="myd_…" + key[-4:], team_id=team, user_id=None, tags=(f"t{key_no % 5}",), model=model,
                deployment=deployment, provider="openai", response_model=model,
                route="primary" if i % 10 else "fallback:gpt-4o", local=local, stream=i % 3 == 0,
                status=503 if error else 200, outcome="error" if error else "ok",
                error_type="provider" if error else None, error_message="upstream 503" if error else None,
                tokens_in=tokens_in, tokens_out=tokens_out, tokens_cache_read=0, tokens_cache_write=0,
                cost_nano=cost, ttft_ms=duration / 4 if i % 3 == 0 else None, overhead_ms=0.4,
                attempts=({"deployment": deployment, "outcome": "ok", "status": 200},), cache=None,
                prompt=" ".join(rng.choices(WORDS, k=40)) if captured else None,
                response=" ".join(rng.choices(WORDS, k=40)) if captured else None,
            )
        )  # fmt: skip
        ledger.append(
            (rid, 1, key, team, None, None, [f"t{key_no % 5}"], model, deployment, "primary", local, tokens_in,
             tokens_out, 0, 0, cost, "error" if error else "ok", 503 if error else 200, duration,
             None, at)
        )  # fmt: skip
    return rows, ledger


async def fill(store: Store, rows: list[RequestRow], ledger_rows: list[tuple[Any, ...]], kind: str) -> float:
    started = time.perf_counter()
    batch = 10_000
    for i in range(0, len(rows), batch):
        await store.write_requests(rows[i : i + batch])
    cols = ", ".join(_sql.LEDGER_COLUMNS)
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(store.path)  # type: ignore[attr-defined]
        values = ", ".join("?" * len(_sql.LEDGER_COLUMNS))
        with conn:
            conn.executemany(
                f"INSERT INTO ledger ({cols}) VALUES ({values})",
                [(*r[:6], _sql.tags_to_json(tuple(r[6])), *r[7:]) for r in ledger_rows],
            )
        conn.close()
    else:
        pool = store._require_pool()  # type: ignore[attr-defined]
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "ledger",
                schema_name=store.schema,
                columns=list(_sql.LEDGER_COLUMNS),
                records=ledger_rows,  # type: ignore[attr-defined]
            )
            await conn.execute(f'ANALYZE "{store.schema}".ledger')  # type: ignore[attr-defined]
            for table in ("requests", "request_rollup", "request_latency"):
                await conn.execute(f'ANALYZE "{store.schema}".{table}')  # type: ignore[attr-defined]
    return time.perf_counter() - started


async def timed(fn: Callable[[], Awaitable[Any]], runs: int = 5) -> float:
    await fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


async def measure(store: Store, now: float) -> list[tuple[str, str, float]]:
    vis = data.Visibility()
    out: list[tuple[str, str, float]] = []
    for name, span in RANGES.items():
        w = data.Window.last(name, span, now)
        queries: dict[str, Callable[[], Awaitable[Any]]] = {
            "overview: totals": lambda w=w: data.totals(store, w, vis),
            "overview: series by bucket": lambda w=w: data.series(store, w, vis),
            "overview: by model+deployment": lambda w=w: data.grouped(store, w, vis, "model", "deployment"),
            "overview/models: latency p50/p95": lambda w=w: data.latencies(store, w),
            "routing: by local": lambda w=w: data.grouped(store, w, vis, "local"),
            "routing: by route": lambda w=w: data.grouped(store, w, vis, "route"),
            "routing: series by local": lambda w=w: data.series(store, w, vis, by="local"),
            "spend: by key": lambda w=w: data.grouped(store, w, vis, "key_id"),
            "spend: by team": lambda w=w: data.grouped(store, w, vis, "team_id"),
            "spend: by tag": lambda w=w: data.grouped(store, w, vis, "tags"),
            "cache: by cache": lambda w=w: data.grouped(store, w, vis, "cache"),
            "scoped (team) totals": lambda w=w: data.totals(store, w, data.Visibility(team_id="team-3")),
            "log: newest 100": lambda w=w: store.search_requests(RequestQuery(since=w.since, limit=100)),
            "log: key filter": lambda w=w: store.search_requests(
                RequestQuery(since=w.since, key_id="key_007")
            ),
            "log: model+status=errors": lambda w=w: store.search_requests(
                RequestQuery(since=w.since, model="gpt-4o", status="errors")
            ),
            "log: text search q=": lambda w=w: store.search_requests(
                RequestQuery(since=w.since, text="kilo lima zulu")
            ),
        }
        for label, fn in queries.items():
            out.append((label, name, await timed(fn)))
    out.append(("spend: budgets", "-", await timed(lambda: store.budgets())))
    out.append(
        ("drill-down: request by id", "-", await timed(lambda: store.request_by_id("req_000000500000")))
    )
    out.append(
        (
            "drill-down: ledger rows",
            "-",
            await timed(lambda: store.ledger_rows(request_id="req_000000500000")),
        )
    )
    return out


async def run(kind: str, n: int, dsn: str) -> list[tuple[str, str, float]]:
    now = time.time()
    rows, ledger_rows = make_rows(n, now)
    with tempfile.TemporaryDirectory() as tmp:
        store: Store
        schema = f"modelyard_bench_{os.getpid()}"
        if kind == "sqlite":
            from modelyard.store.sqlite import SqliteStore

            store = SqliteStore(str(Path(tmp) / "bench.db"))
        else:
            from modelyard.store.postgres import PostgresStore

            store = PostgresStore(dsn, schema=schema, pool_size=4)
        await store.open()
        try:
            seconds = await fill(store, rows, ledger_rows, kind)
            print(f"{kind}: filled {n:,} requests + {n:,} ledger rows in {seconds:.1f} s", flush=True)
            del rows, ledger_rows
            return await measure(store, now)
        finally:
            if kind == "postgres":
                pool = store._require_pool()  # type: ignore[attr-defined]
                await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    dsn = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    kinds = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = {kind: asyncio.run(run(kind, args.rows, dsn)) for kind in kinds}
    print(f"\nmedian ms of 5 runs, {args.rows:,} rows over 7 days")
    print(f"{'query':36} {'range':>5} " + " ".join(f"{k:>9}" for k in kinds))
    for i, (label, rng, _) in enumerate(results[kinds[0]]):
        cells = " ".join(f"{results[k][i][2]:9.1f}" for k in kinds)
        print(f"{label:36} {rng:>5} {cells}")
    worst = max(ms for k in kinds for _, _, ms in results[k])
    print(f"\nslowest: {worst:.1f} ms ({'under' if worst < 200 else 'OVER'} the 200 ms target)")


if __name__ == "__main__":
    main()

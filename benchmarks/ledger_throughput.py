#!/usr/bin/env python3
"""Ledger throughput: can the store keep up with 2,000 requests/s without a growing backlog?

Each request does what the gateway does for a keyed request: one reservation on 3 budgets (key,
team, user), awaited, then one settlement (a ledger row, the budgets trued up), queued. No HTTP,
no gateway: the store alone, on SQLite (a fresh file in a temp dir) and PostgreSQL (a fresh schema,
dropped afterwards).

Per backend and source tree (--src, optionally a baseline tree for an A/B), each measurement in a
fresh process:

  open loop    requests arrive at --rate per second for --seconds, whatever the store does. Every
               second: requests started and finished, the backlog (requests still reserving +
               settlements not yet committed), reserve latency. The backlog must stay flat:
               its least-squares slope over the run (items/s) is reported, and "flat" means it
               grew by less than 5% of one second's requests over the whole run.
  closed loop  --clients clients each reserve -> settle as fast as they can for --closed-seconds:
               the store's maximum rate on this machine.

Rounds alternate the trees (A B A B ...), so a noisy shared machine hurts both alike. Progress goes
to stderr; results to benchmarks/out/ledger-<UTC time>/ledger_throughput.{json,md}.

  .venv/bin/python benchmarks/ledger_throughput.py                      # both backends, 20 s open loop
  .venv/bin/python benchmarks/ledger_throughput.py --backends postgres --rounds 3 \\
      --baseline-commit d0fd1f3                                          # A/B against an older commit

Environment: MODELYARD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PG = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
NANO_PER_USD = 10**9


def log(msg: str) -> None:
    print(f"[ledger {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if len(values) < 2:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


def slope(ys: list[float]) -> float:
    """Least-squares slope of ``ys`` sampled once a second (per second)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / sum((x - mx) ** 2 for x in range(n))


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the child: one measurement, in the tree on PYTHONPATH -----------------------------------------
class Load:
    """The requests, built like the gateway's (3 budgets, one attempt row each)."""

    def __init__(self, store: Any) -> None:
        from modelyard.store import base

        self.base = base
        self.store = store
        self.tag = uuid.uuid4().hex[:8]
        self.budgets = (
            (base.Scope.KEY, f"k-{self.tag}"),
            (base.Scope.TEAM, f"team-{self.tag}"),
            (base.Scope.USER, f"user-{self.tag}"),
        )
        self.n = 0
        self.latencies: list[float] = []

    async def prepare(self) -> None:
        for scope, scope_id in self.budgets:
            await self.store.set_budget(
                self.base.BudgetSpec(scope, scope_id, self.base.Period.MONTHLY, 10**9 * NANO_PER_USD)
            )

    async def one(self) -> None:
        b = self.base
        self.n += 1
        request_id = f"{self.tag}-{self.n}"
        now = time.time()
        reservation = b.Reservation(
            request_id=request_id,
            max_cost_nano=50_000,
            budgets=self.budgets,
            key_id=self.budgets[0][1],
            team_id=self.budgets[1][1],
            user_id=self.budgets[2][1],
            org_id=None,
            tags=("bench",),
            model="fake",
            created_at=now,
            deadline_at=now + 600,
        )
        start = time.perf_counter()
        denied = await self.store.reserve(reservation)
        self.latencies.append(time.perf_counter() - start)
        if denied is not None:
            raise RuntimeError(f"the benchmark's budget refused a request: {denied}")
        row = b.AttemptRow(
            request_id=request_id,
            attempt=1,
            key_id=reservation.key_id,
            team_id=reservation.team_id,
            user_id=reservation.user_id,
            org_id=None,
            tags=("bench",),
            model_requested="fake",
            deployment="openai/fake",
            route_reason="primary",
            local=False,
            tokens_in=12,
            tokens_out=32,
            tokens_cache_read=0,
            tokens_cache_write=0,
            cost_nano=350,
            status="ok",
            http_status=200,
            latency_ms=1.0,
            ttft_ms=None,
            created_at=now,
        )
        await self.store.settle(b.Settlement(request_id, (row,)))


async def open_loop(load: Load, rate: float, seconds: float) -> dict[str, Any]:
    tasks: set[asyncio.Task[None]] = set()
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    started = finished = 0

    def done(task: asyncio.Task[None]) -> None:
        nonlocal finished
        tasks.discard(task)
        finished += 1
        if not task.cancelled() and task.exception() is not None:
            errors.append(repr(task.exception()))

    cpu0, t0 = cpu_s(), time.perf_counter()
    next_sample, last_started, last_finished, last_lat = 1.0, 0, 0, 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate)
        while started < due:
            task = asyncio.create_task(load.one())
            tasks.add(task)
            task.add_done_callback(done)
            started += 1
        if elapsed >= next_sample:
            queued = int(getattr(load.store, "queued_settlements", 0))
            window = load.latencies[last_lat:]
            samples.append(
                {
                    "t": round(elapsed, 2),
                    "started": started - last_started,
                    "finished": finished - last_finished,
                    "reserving": len(tasks),
                    "settlements_queued": queued,
                    "backlog": len(tasks) + queued,
                    "reserve_p50_ms": pct(window, 50),
                    "reserve_p99_ms": pct(window, 99),
                }
            )
            last_started, last_finished, last_lat = started, finished, len(load.latencies)
            next_sample += 1.0
            log(
                f"  t={elapsed:5.1f}s started {samples[-1]['started']:5d}/s finished {samples[-1]['finished']:5d}/s "
                f"backlog {samples[-1]['backlog']:5d} (reserving {len(tasks)}, settlements {queued})"
            )
        await asyncio.sleep(0.001)
    wall = time.perf_counter() - t0
    drain0 = time.perf_counter()
    await asyncio.gather(*tasks, return_exceptions=True)
    await load.store.flush()
    drain_s = time.perf_counter() - drain0
    cpu = cpu_s() - cpu0
    backlog = [s["backlog"] for s in samples[1:]]  # the first second fills the pipeline
    growth = slope(backlog) * len(backlog)
    return {
        "rate_target": rate,
        "seconds": seconds,
        "started": started,
        "achieved_per_s": started / wall,
        "finished_in_window_per_s": finished / wall,
        "drain_s": round(drain_s, 3),
        "reserve_p50_ms": pct(load.latencies, 50),
        "reserve_p99_ms": pct(load.latencies, 99),
        "backlog_mean": statistics.fmean(backlog) if backlog else None,
        "backlog_max": max(backlog) if backlog else None,
        "backlog_slope_per_s": slope(backlog),
        "backlog_flat": abs(growth) < 0.05 * rate,
        "client_cpu_ms_per_request": 1000 * cpu / started if started else None,
        "errors": errors[:5],
        "error_count": len(errors),
        "samples": samples,
    }


async def closed_loop(load: Load, clients: int, seconds: float) -> dict[str, Any]:
    load.latencies = []
    stop = time.perf_counter() + seconds

    async def client() -> int:
        n = 0
        while time.perf_counter() < stop:
            await load.one()
            n += 1
        return n

    cpu0, t0 = cpu_s(), time.perf_counter()
    done = sum(await asyncio.gather(*(client() for _ in range(clients))))
    await load.store.flush()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": done,
        "per_s": done / wall,
        "reserve_p50_ms": pct(load.latencies, 50),
        "reserve_p99_ms": pct(load.latencies, 99),
        "client_cpu_ms_per_request": 1000 * (cpu_s() - cpu0) / done if done else None,
    }


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="ledger-bench-")
    schema = f"modelyard_ledgerbench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if spec["backend"] == "sqlite":
        from modelyard.store.sqlite import SqliteStore

        store: Any = SqliteStore(os.path.join(tmp, "ledger.db"))
    else:
        from modelyard.store.postgres import PostgresStore

        store = PostgresStore(spec["dsn"], schema=schema)
    await store.open()
    try:
        load = Load(store)
        await load.prepare()
        # A short warm-up: connections, prepared statements, the SQLite file.
        await closed_loop(load, 8, 1.0)
        if spec["mode"] == "open":
            return await open_loop(load, spec["rate"], spec["seconds"])
        return await closed_loop(load, spec["clients"], spec["seconds"])
    finally:
        await store.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
        if spec["backend"] == "postgres":
            import asyncpg

            conn = await asyncpg.connect(spec["dsn"])
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


def run_child(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(child(spec))
    sys.stdout.write(json.dumps(result) + "\n")


# -- the parent: rounds, trees, the report ---------------------------------------------------------
def measure(tree: str, src: str, spec: dict[str, Any], python: str, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=src)
    p = subprocess.run(
        [python, os.path.abspath(__file__), "--child", json.dumps(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        timeout=timeout,
    )
    if p.returncode != 0:
        return {"tree": tree, **spec, "failed": f"exit {p.returncode}"}
    return {"tree": tree, **spec, **json.loads(p.stdout.strip().splitlines()[-1])}


def fmt(v: Any, nd: int = 1) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"{meta['date']}, trees: {', '.join(f'{k} = {v}' for k, v in meta['trees'].items())}; "
        f"Python {meta['python']}; load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}.",
        "",
        f"Open loop at {meta['rate']:,.0f} req/s for {meta['seconds']:.0f} s (each: reserve on 3 budgets, then settle):",
        "",
        "| backend | tree | round | achieved /s | reserve p50 ms | p99 ms | backlog mean / max | backlog slope /s | flat | drain s | client CPU ms/req | errors |",
        "|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        if r["mode"] != "open":
            continue
        if "failed" in r:
            lines.append(f"| {r['backend']} | {r['tree']} | {r['round']} | failed: {r['failed']} |")
            continue
        lines.append(
            f"| {r['backend']} | {r['tree']} | {r['round']} | {fmt(r['achieved_per_s'], 0)} | "
            f"{fmt(r['reserve_p50_ms'], 2)} | {fmt(r['reserve_p99_ms'], 2)} | "
            f"{fmt(r['backlog_mean'], 0)} / {r['backlog_max']} | {r['backlog_slope_per_s']:+.2f} | "
            f"{'yes' if r['backlog_flat'] else '**no**'} | {r['drain_s']} | {fmt(r['client_cpu_ms_per_request'], 3)} | "
            f"{r['error_count']} |"
        )
    lines += [
        "",
        f"Closed loop, {meta['clients']} clients for {meta['closed_seconds']:.0f} s:",
        "",
        "| backend | tree | round | reserve+settle /s | reserve p50 ms | p99 ms | client CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["mode"] != "closed":
            continue
        if "failed" in r:
            lines.append(f"| {r['backend']} | {r['tree']} | {r['round']} | failed: {r['failed']} |")
            continue
        lines.append(
            f"| {r['backend']} | {r['tree']} | {r['round']} | {fmt(r['per_s'], 0)} | "
            f"{fmt(r['reserve_p50_ms'], 2)} | {fmt(r['reserve_p99_ms'], 2)} | {fmt(r['client_cpu_ms_per_request'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--rate", type=float, default=2000.0, help="open-loop arrival rate, requests/s (2000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="open-loop duration, s (20)")
    ap.add_argument("--clients", type=int, default=64, help="closed-loop clients (64)")
    ap.add_argument("--closed-seconds", type=float, default=10.0, help="closed-loop duration, s (10)")
    ap.add_argument("--modes", default="open,closed", help="comma-separated: open, closed")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, alternating the trees (1)")
    ap.add_argument("--src", default=os.path.join(REPO, "src"), help="the tree measured (default: ./src)")
    ap.add_argument(
        "--baseline-commit", default=None, help="also measure this commit's src (git archive), alternated"
    )
    ap.add_argument("--baseline-src", default=None, help="also measure this src directory, alternated")
    ap.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    ap.add_argument("--out-dir", default=None, help="default benchmarks/out/ledger-<UTC time>/")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        run_child(args.child)
        return

    trees = {"new": os.path.abspath(args.src)}
    snapshot = None
    if args.baseline_commit:
        snapshot = tempfile.mkdtemp(prefix="ledger-baseline-")
        subprocess.run(
            f"git archive {args.baseline_commit} src | tar -x -C {snapshot}", shell=True, cwd=REPO, check=True
        )
        trees[f"old@{args.baseline_commit[:7]}"] = os.path.join(snapshot, "src")
    elif args.baseline_src:
        trees["old"] = os.path.abspath(args.baseline_src)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = args.out_dir or os.path.join(HERE, "out", f"ledger-{stamp}")
    os.makedirs(out_dir, exist_ok=True)
    with open("/proc/loadavg") as f:
        load_start = " ".join(f.read().split()[:3])
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit + ("+uncommitted" if dirty.stdout.strip() else ""),
        "trees": trees,
        "python": platform.python_version(),
        "rate": args.rate,
        "seconds": args.seconds,
        "clients": args.clients,
        "closed_seconds": args.closed_seconds,
        "rounds": args.rounds,
        "loadavg_start": load_start,
        "pg": PG,
    }
    results: list[dict[str, Any]] = []
    names = list(trees)
    try:
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for backend in [b for b in args.backends.split(",") if b]:
                for mode in [m for m in args.modes.split(",") if m]:
                    for tree in order:
                        spec: dict[str, Any] = {"backend": backend, "mode": mode, "dsn": PG, "round": rnd + 1}
                        if mode == "open":
                            spec.update(rate=args.rate, seconds=args.seconds)
                        else:
                            spec.update(clients=args.clients, seconds=args.closed_seconds)
                        log(f"round {rnd + 1}: {backend} {mode} loop, tree {tree}")
                        r = measure(tree, trees[tree], spec, args.python, args.seconds * 4 + 120)
                        results.append(r)
                        if mode == "open" and "failed" not in r:
                            log(
                                f"  -> {r['achieved_per_s']:.0f}/s, backlog mean {fmt(r['backlog_mean'], 0)} "
                                f"slope {r['backlog_slope_per_s']:+.2f}/s ({'flat' if r['backlog_flat'] else 'GROWING'}), "
                                f"reserve p50 {fmt(r['reserve_p50_ms'], 2)} p99 {fmt(r['reserve_p99_ms'], 2)} ms"
                            )
                        elif "failed" not in r:
                            log(
                                f"  -> {r['per_s']:.0f} reserve+settle/s, reserve p50 {fmt(r['reserve_p50_ms'], 2)} ms"
                            )
    finally:
        if snapshot:
            shutil.rmtree(snapshot, ignore_errors=True)
    with open("/proc/loadavg") as f:
        meta["loadavg_end"] = " ".join(f.read().split()[:3])
    with open(os.path.join(out_dir, "ledger_throughput.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    md = render(results, meta)
    with open(os.path.join(out_dir, "ledger_throughput.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"results in {out_dir}")


if __name__ == "__main__":
    main()

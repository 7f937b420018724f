#!/usr/bin/env python3
"""Prompt-cache affinity vs plain P2C balancing on a shared-prefix workload, in one run.

Three fake Anthropic deployments of one model (tests/fakes/prefix_cache.py, in this process), each
with its own prompt cache: a request whose system prompt carries ``cache_control`` reads its
prefix (system + first user turn) from the cache when that deployment saw it within 5 minutes, and
is answered after ``--base-ms``; on a miss it also pays prefill, ``--miss-ms-per-ktok`` per
thousand prefix tokens (≈ 2,000 tokens here), and the prefix is written to that deployment's cache.

For each variant a fresh gateway process (`python -m modelyard serve`, no master key, its own
SQLite ledger) fronts the three deployments (``max_concurrency`` --slots each), the caches are
emptied, and ``--conversations`` conversations of ``--turns`` turns each run through
``--concurrency`` closed-loop clients (a conversation's turns in order, conversations interleaved).

Variants: ``p2c`` (the default ``p2c_ewma`` strategy, no affinity) and ``affinity``
(``routing.affinity.mode: prefix`` over the same strategy). Recorded per variant: prefix-cache hit
rate (upstream counters), client latency p50/p99 (a non-streamed answer ≈ time to first token
here), how often the conversation's home yielded to load (``x-modelyard-route``), and the ledger's
total cost (catalog prices of claude-sonnet-4-5, cache reads and writes included).

    .venv/bin/python benchmarks/affinity.py                     # ~20 s
    .venv/bin/python benchmarks/affinity.py --conversations 96  # longer
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes.prefix_cache import PrefixCacheUpstream  # noqa: E402

UPSTREAM_KEY = "bench-upstream-key"
VARIANTS = {"p2c": "", "affinity": "affinity: {mode: prefix}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(db: Path, upstreams: list[PrefixCacheUpstream], routing: str, slots: int) -> str:
    deployments = "\n".join(
        f"      - {{provider: anthropic, model: claude-sonnet-4-5, base_url: {u.base_url}, "
        f"api_key: env:BENCH_UPSTREAM_KEY, max_concurrency: {slots}, max_queue: {4 * slots}}}"
        for u in upstreams
    )
    return f"""\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
request_log: {{enabled: false}}
models:
  - name: claude
    routing: {{{routing}}}
    deployments:
{deployments}
"""


def start_gateway(workdir: Path, text: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = workdir / "modelyard.yaml"
    cfg.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env |= {"BENCH_UPSTREAM_KEY": UPSTREAM_KEY, "MODELYARD_MASTER_KEY": ""}
    log = (workdir / "gateway.log").open("wb")
    args = [sys.executable, "-m", "modelyard", "serve", "--config", str(cfg), "--port", str(port)]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gateway did not start; see {workdir / 'gateway.log'}")


def conversation_bodies(index: int, turns: int) -> list[dict[str, Any]]:
    system = f"[tenant {index}] You are the assistant of a shop; answer from the manual. " + "Manual. " * 1000
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"conversation {index}: first question"}]
    bodies = []
    for turn in range(turns):
        bodies.append(
            {
                "model": "claude",
                "max_tokens": 64,
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": list(messages),
            }
        )
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"turn {turn + 1}"}]
    return bodies


async def drive(url: str, args: argparse.Namespace) -> dict[str, Any]:
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for i in range(args.conversations):
        queue.put_nowait(conversation_bodies(i, args.turns))
    latencies: list[float] = []
    routes: collections.Counter[str] = collections.Counter()
    errors = 0
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "none"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            bodies = queue.get_nowait()
            for body in bodies:
                started = time.perf_counter()
                response = await http.post("/v1/messages", json=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1
                route = response.headers.get("x-modelyard-route", "-")
                routes[route.split(":")[0] if route.startswith("spill") else route] += 1

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(args.concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "routes": dict(routes),
    }


def ledger_cost_usd(url: str) -> float:
    rows = httpx.get(url + "/admin/ledger", params={"limit": "10000"}, timeout=10).json()["data"]
    return round(sum(int(r["cost_nano"]) for r in rows) / 1e9, 4)


def run_variant(name: str, upstreams: list[PrefixCacheUpstream], args: argparse.Namespace) -> dict[str, Any]:
    for upstream in upstreams:
        upstream.reset()
    with tempfile.TemporaryDirectory(prefix=f"affinity-{name}-") as tmp:
        work = Path(tmp)
        proc, url = start_gateway(work, config(work / "ledger.db", upstreams, VARIANTS[name], args.slots))
        try:
            result = asyncio.run(drive(url, args))
            time.sleep(0.3)  # let the last settlements commit
            result["ledger_cost_usd"] = ledger_cost_usd(url)
        finally:
            proc.terminate()
            proc.wait(20)
    stats = [u.stats() for u in upstreams]
    hits, misses = sum(s["hits"] for s in stats), sum(s["misses"] for s in stats)
    result["prefix_hit_rate"] = round(hits / max(1, hits + misses), 3)
    result["per_deployment_requests"] = [s["hits"] + s["misses"] + s["uncached"] for s in stats]
    return result


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Shared-prefix workload: {meta['conversations']} conversations × {meta['turns']} turns, "
        f"{meta['concurrency']} clients, 3 deployments × {meta['slots']} slots; hit {meta['base_ms']} ms, "
        f"miss +{meta['miss_ms_per_ktok']} ms per 1k prefix tokens.",
        "",
        "| variant | prefix hit rate | p50 ms | p99 ms | mean ms | ledger cost $ | routes | per deployment |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        routes = ", ".join(f"{k} {v}" for k, v in sorted(r["routes"].items()))
        lines.append(
            f"| {name} | {r['prefix_hit_rate']:.1%} | {r['p50_ms']} | {r['p99_ms']} | {r['mean_ms']} | "
            f"{r['ledger_cost_usd']} | {routes} | {r['per_deployment_requests']} |"
        )
    base, aff = results["p2c"], results["affinity"]
    lines += [
        "",
        f"affinity / p2c: p50 × {aff['p50_ms'] / base['p50_ms']:.2f}, p99 × {aff['p99_ms'] / base['p99_ms']:.2f}, "
        f"cost × {aff['ledger_cost_usd'] / max(base['ledger_cost_usd'], 1e-9):.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=48)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--slots", type=int, default=4, help="max_concurrency of each deployment")
    parser.add_argument("--base-ms", type=float, default=10.0)
    parser.add_argument("--miss-ms-per-ktok", type=float, default=40.0)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    upstreams = [
        PrefixCacheUpstream(
            api_key=UPSTREAM_KEY, base_ms=args.base_ms, miss_ms_per_ktok=args.miss_ms_per_ktok
        ).start()
        for _ in range(3)
    ]
    try:
        results = {name: run_variant(name, upstreams, args) for name in VARIANTS}
    finally:
        for upstream in upstreams:
            upstream.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    meta = {
        **{k: v for k, v in vars(args).items() if k != "out_dir"},
        "commit": commit.stdout.strip(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = args.out_dir or REPO / "benchmarks" / "out" / f"affinity-{time.strftime('%Y%m%dT%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "affinity.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = render(results, meta)
    (out / "affinity.md").write_text(table + "\n")
    print(table)
    print(f"\n(written to {out})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What server-side conversations cost on the request path.

One real gateway (``python -m modelyard serve``, master key, the fake ``echo`` provider at 0 ms)
on SQLite, and on PostgreSQL when reachable. One client (httpx, keep-alive, non-streaming),
alternating in rounds between:

  plain      the new turn only, no conversation (the baseline)
  resend     the client sends the whole history itself (what it does without the feature)
  conv       ``conversation_id``: the gateway loads the history and appends the turn

at history depths of --depths turns (each turn: a user message and the echo answer). Reported per
point: p50/p99 client latency and p50 of the gateway's own ``x-modelyard-overhead-ms`` (which
includes the conversation read and write: they are not upstream time), and the ratio to the
baseline measured in the same round. Also the cost of ``expand`` on a request naming no
conversation (the path every other request takes), in-process.

  .venv/bin/python benchmarks/conversations.py                 # ~1 min
  .venv/bin/python benchmarks/conversations.py --requests 300 --depths 0,10,50,150

Environment: MODELYARD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test).
Writes conversations.json and conversations.md into --out-dir
(default benchmarks/out/conversations-<UTC time>/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MASTER = "bench-master-" + os.urandom(8).hex()
CONFIG = """\
server: {master_key: env:MK}
embedded_models: false
cloud_models_from_env: false
storage: {database: env:DB}
models:
  - name: echo
    deployments: [{provider: fake, model: echo}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    def __init__(self, database: str, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "modelyard.yaml"
        config.write_text(CONFIG)
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
        env |= {"MK": MASTER, "DB": database, "MODELYARD_HOME": str(workdir)}
        self.log = (workdir / "gateway.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", "--port", str(self.port), "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start; see {workdir / 'gateway.log'}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _history(depth: int) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for n in range(depth):
        messages += [
            {"role": "user", "content": f"question number {n} about the weather"},
            {"role": "assistant", "content": f"echo: question number {n} about the weather"},
        ]
    return messages


def _measure(
    client: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[float, float]:
    started = time.perf_counter()
    r = client.post("/v1/chat/completions", json=body, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    r.raise_for_status()
    return elapsed, float(r.headers["x-modelyard-overhead-ms"])


def run_backend(
    name: str, database: str, depths: list[int], requests: int, rounds: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(database, Path(tmp))
        try:
            return _points(gateway, name, depths, requests, rounds)
        finally:
            gateway.stop()


def _points(
    gateway: Gateway, name: str, depths: list[int], requests: int, rounds: int
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        new = [{"role": "user", "content": "and what about tomorrow"}]
        for _ in range(50):  # warm up
            _measure(client, {"model": "echo", "messages": new})
        for depth in depths:
            samples: dict[str, list[tuple[float, float]]] = {"plain": [], "resend": [], "conv": []}
            # Conversations prefilled to `depth` turns, one per measured request (each request then
            # appends one turn, so every measured request sees exactly `depth` turns).
            per_round = max(1, requests // rounds)
            for _ in range(rounds):
                ids = []
                for _ in range(per_round):
                    cid = "bench-" + uuid.uuid4().hex
                    if depth:
                        body = {"model": "echo", "messages": _history(depth)[:-1], "conversation_id": cid}
                        # One request stores the whole prefilled history as its turn.
                        client.post("/v1/chat/completions", json=body).raise_for_status()
                    ids.append(cid)
                for cid in ids:
                    samples["plain"].append(_measure(client, {"model": "echo", "messages": new}))
                    samples["resend"].append(
                        _measure(client, {"model": "echo", "messages": [*_history(depth), *new]})
                    )
                    samples["conv"].append(
                        _measure(client, {"model": "echo", "messages": new, "conversation_id": cid})
                    )
            base = statistics.median(s[0] for s in samples["plain"])
            base_overhead = statistics.median(s[1] for s in samples["plain"])
            for variant, points in samples.items():
                latency = sorted(p[0] for p in points)
                overhead = statistics.median(p[1] for p in points)
                results.append(
                    {
                        "backend": name,
                        "depth_turns": depth,
                        "variant": variant,
                        "n": len(points),
                        "p50_ms": round(statistics.median(latency), 3),
                        "p99_ms": round(latency[int(0.99 * (len(latency) - 1))], 3),
                        "overhead_p50_ms": round(overhead, 3),
                        "p50_vs_plain": round(statistics.median(latency) / base, 2),
                        "overhead_vs_plain": round(overhead / base_overhead, 2) if base_overhead else None,
                    }
                )
    return results


def expand_noop_ns() -> float:
    """ConversationService.expand on a body that names no conversation (every other request)."""
    sys.path.insert(0, str(REPO / "src"))
    from modelyard.config.conversations_schema import ConversationsConfig
    from modelyard.conversations.service import ConversationService
    from modelyard.providers.base import WireProtocol

    class Ctx:
        headers = {"content-type": "application/json", "authorization": "Bearer x"}

    service = ConversationService(None, ConversationsConfig())  # type: ignore[arg-type]
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    ctx = Ctx()
    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            await service.expand(WireProtocol.OPENAI, body, ctx)

    n = 200_000
    best = min(timeit.repeat(lambda: loop.run_until_complete(many(n)), number=1, repeat=5))
    loop.close()
    return best / n * 1e9


def _postgres_database() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return None
    name = "modelyard_bench_conv_" + uuid.uuid4().hex[:8]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"PostgreSQL not used ({type(exc).__name__}: {exc})")
        return None
    return PG.rsplit("/", 1)[0] + "/" + name


def _drop_postgres(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(PG, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100, help="measured requests per variant and depth")
    parser.add_argument("--rounds", type=int, default=4, help="rounds the requests are spread over")
    parser.add_argument("--depths", default="0,10,50", help="history depths in turns, comma-separated")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    out = args.out_dir or HERE / "out" / ("conversations-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite …", flush=True)
        rows += run_backend("sqlite", f"sqlite:///{tmp}/bench.db", depths, args.requests, args.rounds)
    if not args.no_postgres:
        pg = _postgres_database()
        if pg is not None:
            try:
                print("PostgreSQL …", flush=True)
                rows += run_backend("postgres", pg, depths, args.requests, args.rounds)
            finally:
                _drop_postgres(pg)
    noop = expand_noop_ns()
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "expand_noop_ns": round(noop, 1),
    }
    (out / "conversations.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"`{meta['command']}` at {meta['started_utc']} UTC ({meta['wall_s']} s, {meta['cpus']} CPUs, "
        f"Python {meta['python']}); `expand` without a conversation: {meta['expand_noop_ns']} ns.",
        "",
        "| backend | depth (turns) | variant | n | p50 ms | p99 ms | overhead p50 ms | p50 / plain | overhead / plain |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['depth_turns']} | {r['variant']} | {r['n']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['overhead_p50_ms']} | {r['p50_vs_plain']} | {r['overhead_vs_plain']} |"
        )
    (out / "conversations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()

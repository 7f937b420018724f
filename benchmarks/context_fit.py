"""Context fitting: a 50-turn conversation served by the embedded local model with a 2,048-token
window under each policy (reject / fallback / trim / summarize), and token-count accuracy of the
estimates against the real tokenizers.

    .venv/bin/python benchmarks/context_fit.py [--turns 50] [--policies reject,fallback,trim,summarize]
        [--out benchmarks/out/context_fit]

Starts ``python -m modelyard serve`` on loopback (no cloud models). Each turn sends the whole
conversation so far (the user's new question plus the model's real earlier answers) with
``max_tokens`` 16. Per turn it records what the gateway sent the model (``usage.prompt_tokens``,
counted by llama.cpp itself), whether the request was served, the latency and the
``x-modelyard-context`` header. ``fallback`` goes to a second copy of the embedded model with an
8,192-token window. Writes ``turns.csv``, ``summary.md`` and ``accuracy.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from modelyard.providers.llamacpp import embedded_model_path

TOPICS = ("the harbour", "a lighthouse", "tides", "the fish market", "storms", "old maps", "ferries")


def _config(policy: str, gguf: str) -> str:
    return f"""
embedded_models: false
cloud_models_from_env: false
server: {{request_timeout_s: 300}}
models:
  - name: small
    deployments: [{{provider: llamacpp, n_ctx: 2048}}]
    routing: {{context_fallback: large, deadline_s: 600}}
    context:
      policy: {policy}
      reserve_tokens: 128
      summarize: {{model: small, max_summary_tokens: 128, timeout_s: 600}}
  - name: large
    deployments: [{{provider: llamacpp, n_ctx: 8192, path: "{gguf}"}}]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _question(n: int) -> str:
    topic = TOPICS[n % len(TOPICS)]
    return (
        f"Question {n + 1}: tell me about {topic} in our town, who worked there, what changed over the "
        f"last fifty years, and one story people still tell about it."
    )


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_policy(policy: str, turns: int, gguf: str, workdir: Path, csv_path: Path) -> list[dict[str, Any]]:
    config = workdir / f"{policy}.yaml"
    config.write_text(_config(policy, gguf))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["MODELYARD_HOME"] = str(workdir / policy)
    log = (workdir / f"{policy}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start; see {workdir / (policy + '.log')}")
            time.sleep(0.3)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a friendly local historian. Answer in two sentences."}
        ]
        with httpx.Client(base_url=url, timeout=600) as client:
            for n in range(turns):
                messages.append({"role": "user", "content": _question(n)})
                started = time.perf_counter()
                response = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "small",
                        "messages": messages,
                        "max_tokens": 16,
                        "temperature": 0,
                        "seed": 1,
                    },
                )
                latency = time.perf_counter() - started
                body = response.json()
                ok = response.status_code == 200
                answer = body["choices"][0]["message"]["content"] if ok else ""
                rows.append(
                    {
                        "policy": policy,
                        "turn": n + 1,
                        "messages": len(messages),
                        "status": response.status_code,
                        "served": ok,
                        "prompt_tokens_sent": body["usage"]["prompt_tokens"] if ok else "",
                        "context": response.headers.get("x-modelyard-context", ""),
                        "deployment": response.headers.get("x-modelyard-deployment", ""),
                        "latency_s": round(latency, 3),
                    }
                )
                _append_csv(csv_path, rows[-1])
                print(
                    f"{policy:9} turn {n + 1:2}: {rows[-1]['status']} {rows[-1]['context']:24} "
                    f"{rows[-1]['prompt_tokens_sent']!s:>5} tok {latency:6.2f}s",
                    flush=True,
                )
                # The caller keeps the whole history (the gateway fits what it sends).
                messages.append({"role": "assistant", "content": answer or "(no answer)"})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return rows


def summarize(rows: list[dict[str, Any]], policies: list[str]) -> str:
    lines = [
        "| policy | turns served | first refused turn | max tokens sent | mean tokens sent (last 10) "
        "| latency p50 / max s | summaries made / reused | what it did |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        served = [r for r in mine if r["served"]]
        refused = next((r["turn"] for r in mine if not r["served"]), "-")
        sent = [int(r["prompt_tokens_sent"]) for r in served]
        last = [int(r["prompt_tokens_sent"]) for r in served[-10:]]
        lat = [float(r["latency_s"]) for r in served]
        made = sum(
            1 for r in mine if r["context"].startswith("summarized") and not r["context"].endswith("cached")
        )
        reused = sum(1 for r in mine if r["context"].endswith(":cached"))
        kinds = sorted({r["context"].split(":")[0] for r in mine if r["context"]})
        lines.append(
            f"| {policy} | {len(served)}/{len(mine)} | {refused} | {max(sent, default=0)} | "
            f"{statistics.mean(last) if last else 0:.0f} | "
            f"{statistics.median(lat) if lat else 0:.2f} / {max(lat, default=0):.2f} | "
            f"{made} / {reused} | {', '.join(kinds)} |"
        )
    return "\n".join(lines)


def accuracy(gguf: str) -> str:
    """Estimates against exact tokenizers on prose, code and JSON from this repository."""
    from modelyard.routing.context.profiles import Counters, CounterSpec

    root = Path(__file__).resolve().parents[1]
    samples: dict[str, list[str]] = {"prose (docs/*.md)": [], "code (src/**/*.py)": [], "json": []}
    for path in sorted((root / "docs").glob("*.md"))[:12]:
        samples["prose (docs/*.md)"] += [p for p in path.read_text().split("\n\n") if len(p) > 200][:10]
    for path in sorted((root / "src" / "modelyard" / "routing").glob("*.py"))[:12]:
        text = path.read_text()
        samples["code (src/**/*.py)"] += [text[i : i + 1500] for i in range(0, min(len(text), 9000), 1500)]
    catalog = (root / "src" / "modelyard" / "accounting" / "catalog.json").read_text()
    samples["json"] = [catalog[i : i + 1500] for i in range(0, len(catalog), 1500)]
    counters = Counters()
    gg = counters.get(CounterSpec("gguf", gguf)).tokenizer
    cl = counters.get(CounterSpec("cl100k")).tokenizer
    an = counters.get(CounterSpec("anthropic")).tokenizer
    lines = [
        "| sample | n | chars/4 vs cl100k | chars/4 vs GGUF | cl100k vs GGUF | anthropic est. ÷ cl100k |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def err(est: list[int], exact: list[int]) -> str:
        rel = [(e - x) / x for e, x in zip(est, exact, strict=True) if x]
        mean = statistics.mean(rel) * 100
        mae = statistics.mean(abs(r) for r in rel) * 100
        return f"{mean:+.1f} % (|err| {mae:.1f} %)"

    for name, texts in samples.items():
        texts = [t for t in texts if t.strip()]
        chars = [int(len(t) / 4 + 0.999) for t in texts]
        cl_counts = [cl.count(t) for t in texts]
        gg_counts = [gg.count(t) for t in texts]
        an_counts = [an.count(t) for t in texts]
        ratio = sum(an_counts) / max(1, sum(cl_counts))
        lines.append(
            f"| {name} | {len(texts)} | {err(chars, cl_counts)} | {err(chars, gg_counts)} | "
            f"{err(cl_counts, gg_counts)} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def overhead() -> str:
    """What fitting costs per request, against parsing the same request body (paid anyway)."""
    import asyncio

    import orjson

    from modelyard.api.asgi import Dialect, RequestContext
    from modelyard.config.load import load_config
    from modelyard.providers.base import WireProtocol
    from modelyard.state import AppState

    config = load_config(
        """
embedded_models: false
cloud_models_from_env: false
models:
  - name: local8k
    deployments: [{provider: llamacpp, n_ctx: 8192}]
  - name: local2k
    deployments: [{provider: llamacpp, n_ctx: 2048}]
    context: {policy: trim}
"""
    )

    def conversation(turns: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"role": "system", "content": "You are a friendly local historian."}]
        for n in range(turns):
            out.append({"role": "user", "content": _question(n)})
            out.append({"role": "assistant", "content": "It was busy, and the old pier still stands."})
        out.append({"role": "user", "content": _question(turns)})
        return out

    async def measure() -> list[tuple[str, float, float]]:
        state = AppState.build(config)
        assert state.context is not None
        rows: list[tuple[str, float, float]] = []
        for label, model, turns, reps in (
            ("3-message chat, 8K window (fast path: byte bound, no tokenizer)", "local8k", 1, 2000),
            ("50-turn chat (~3.4K tokens), 2K window, trim (exact GGUF counts)", "local2k", 50, 20),
        ):
            body = {"model": model, "messages": conversation(turns), "max_tokens": 16}
            raw = orjson.dumps(body)
            group = state.router.group(model)
            await state.context.fit(WireProtocol.OPENAI, body, RequestContext.new(Dialect.OPENAI, {}), group)
            started = time.perf_counter()
            for _ in range(reps):
                orjson.loads(raw)
            parse = (time.perf_counter() - started) / reps
            started = time.perf_counter()
            for _ in range(reps):
                ctx = RequestContext.new(Dialect.OPENAI, {})
                await state.context.fit(WireProtocol.OPENAI, body, ctx, group)
            fit = (time.perf_counter() - started) / reps
            rows.append((label + f" → {ctx.context}", fit * 1e6, parse * 1e6))
        await state.session.close()
        return rows

    lines = ["| request | fit µs | body parse µs (baseline) | ratio |", "|---|---:|---:|---:|"]
    for label, fit_us, parse_us in asyncio.run(measure()):
        lines.append(f"| {label} | {fit_us:,.1f} | {parse_us:,.1f} | {fit_us / parse_us:,.1f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--policies", default="reject,fallback,trim,summarize")
    parser.add_argument("--out", default="benchmarks/out/context_fit")
    parser.add_argument("--overhead-only", action="store_true", help="only measure what fitting costs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.md").write_text(overhead() + "\n")
    print((out / "overhead.md").read_text())
    if args.overhead_only:
        return
    gguf = embedded_model_path()
    (out / "accuracy.md").write_text(accuracy(gguf) + "\n")
    print((out / "accuracy.md").read_text())
    policies = [p for p in args.policies.split(",") if p]
    rows: list[dict[str, Any]] = []
    csv_path = out / "turns.csv"
    csv_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for policy in policies:
            rows += run_policy(policy, args.turns, gguf, Path(tmp), csv_path)
    table = summarize(rows, policies)
    (out / "summary.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

"""Exact-cache hits through the gateway, against the same fake upstream called directly, in one run.

    .venv/bin/python benchmarks/cache_hit_latency.py --duration 8 --out benchmarks/out/cache_hit

Starts the shared harness's fake OpenAI upstream (``/work/shared/bench/fake_upstream.py``, 0 ms)
and ``modelyard serve`` with two models on it: ``cached`` (exact cache, memory backend) and
``uncached``. The shared load generator (``loadgen.py``, concurrency 1, one fixed prompt, so every
measured request to ``cached`` is a hit) measures four series back to back:

1. the upstream directly (the floor),
2. the gateway, ``uncached`` (the normal path: auth, admission, the upstream call, settlement),
3. the gateway, ``cached`` (hits: no upstream call),
4. the gateway, ``cached``, streamed (hits replayed as SSE).

Both processes are stopped by PID at the end. The machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit(f"{what} did not start")


def loadgen(url: str, model: str, args: argparse.Namespace, *, stream: bool = False) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--url",
        url,
        "--model",
        model,
        "--prompt",
        "What is a response cache?",
        "-c",
        "1",
        "-d",
        str(args.duration),
        "--warmup",
        "1",
        "--json-out",
        str(out),
    ]
    if stream:
        command.append("--stream")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per series (default 8)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cache_hit"))
    args = parser.parse_args()
    if not (BENCH / "loadgen.py").exists():
        sys.exit(f"the shared harness is not at {BENCH} (set SHARED_BENCH)")
    args.out.mkdir(parents=True, exist_ok=True)
    upstream_port, gateway_port = free_port(), free_port()
    config = args.out / "modelyard.yaml"
    deployment = (
        f"    deployments: [{{provider: openai, model: fake, base_url: 'http://127.0.0.1:{upstream_port}/v1', "
        "api_key: 'env:BENCH_UPSTREAM_KEY'}]\n"
    )
    config.write_text(
        "embedded_models: false\ncloud_models_from_env: false\n"
        "cache: {enabled: true, backend: memory}\n"
        "request_log: {enabled: false}\n"
        f"models:\n  - name: cached\n{deployment}"
        f"  - name: uncached\n    cache: {{enabled: false}}\n{deployment}"
    )
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "dummy", "MODELYARD_HOME": str(args.out / "home")}
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(upstream_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "serve", "--config", str(config), "--port", str(gateway_port)],
        stdout=(args.out / "gateway.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    results: dict[str, Any] = {}
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/", upstream, "fake upstream")
        wait_ready(f"http://127.0.0.1:{gateway_port}/healthz", gateway, "gateway")
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        through = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        check = httpx.post(through, json={"model": "cached", "messages": [{"role": "user", "content": "x"}]})
        check = httpx.post(through, json={"model": "cached", "messages": [{"role": "user", "content": "x"}]})
        assert check.headers["x-modelyard-cache"] == "hit", check.headers
        results["direct upstream"] = loadgen(direct, "fake", args)
        results["gateway, no cache (upstream call)"] = loadgen(through, "uncached", args)
        results["gateway, exact-cache hit"] = loadgen(through, "cached", args)
        results["gateway, exact-cache hit, streamed"] = loadgen(through, "cached", args, stream=True)
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    (args.out / "cache_hit_latency.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| series (concurrency 1) | requests | p50 ms | p90 ms | p99 ms | req/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lat = r["latency"]
        lines.append(
            f"| {name} | {r['requests_ok']} | {lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} | {lat['p99_ms']:.3f} | {r['rps']:.0f} |"
        )
    text = "\n".join(lines)
    (args.out / "cache_hit_latency.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

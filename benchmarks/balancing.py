#!/usr/bin/env python3
"""Load-balancing strategies compared on heterogeneous upstreams served over HTTP on 127.0.0.1.

Four replicas of an OpenAI-compatible fake, all in one helper process (raw asyncio, uvloop when
importable), each on its own port:

    r0  fast     --fast-ms (10 ms) before every answer
    r1  fast     --fast-ms
    r2  slow     --slow-ms (50 ms, 5x slower)
    r3  flapping --fast-ms while healthy; alternates --flap-s (2 s) healthy / --flap-s answering a
                 fast 503 (no Retry-After unless --flap-retry-after is given)

For each variant a fresh gateway (`python -m modelyard serve`, one model "fake" with the four
deployments, strategy set in `routing.strategy`) is started, warmed up for --warmup s, then the
shared closed-loop load generator (/work/shared/bench/loadgen.py, keep-alive, non-streaming) drives
--concurrency clients for --duration s. Recorded per variant:

  * client side (loadgen): p50/p99 latency of successful requests, error rate;
  * upstream side (the helper's counters, read before/after the measured window over GET /stats):
    per replica answers (200) and failures (503) -> share of served requests per replica, and
    upstream attempts per client request;
  * gateway side: /admin/deployments polled every 0.5 s -> share of time the flapping replica's
    breaker was open, the final EWMA per replica; gateway CPU (utime+stime from /proc).

Variants: the four strategies (round_robin, random, least_outstanding, p2c_ewma) with the shipped
routing defaults; two with the circuit breaker effectively off (`breaker.consecutive_failures:
1000000`) to see what the P2C failure penalty does on its own; and two where the replicas share one
upstream model name (see VARIANTS). The gateway runs without a master key (anonymous requests, a
per-variant SQLite ledger).
Variants run in turn; with --rounds N the order rotates each round.

Loopback only; every process started is stopped by PID. Writes balancing.json + balancing.md
into --out-dir (default benchmarks/out/balancing-<UTC time>/).

  .venv/bin/python benchmarks/balancing.py                              # ~3.5 min (8 variants x ~26 s)
  .venv/bin/python benchmarks/balancing.py --rounds 2 --duration 15     # ~5.5 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("SHARED_BENCH", "/work/shared/bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NAMES = ["r0-fast", "r1-fast", "r2-slow", "r3-flap"]


def log(msg: str) -> None:
    print("[balancing {}] {}".format(time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ================================================================== the fake upstreams (helper mode)
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from a fake replica."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    },
    separators=(",", ":"),
).encode()
OVERLOADED = (
    b'{"error":{"message":"replica overloaded (flapping)","type":"server_error","code":"overloaded"}}'
)


def _resp(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        + extra
        + b"\r\n"
        + body
    )


class Counters:
    ok = [0, 0, 0, 0]
    fail = [0, 0, 0, 0]


class ReplicaProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies (what aiohttp sends), one request at a time."""

    def __init__(self, idx: int, cfg: argparse.Namespace, t0: float) -> None:
        self.idx, self.cfg, self.t0 = idx, cfg, t0
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.delay = (cfg.slow_ms if idx == 2 else cfg.fast_ms) / 1000.0
        ra = b"Retry-After: %d\r\n" % cfg.flap_retry_after if cfg.flap_retry_after else b""
        self.ok_resp = _resp(b"200 OK", COMPLETION)
        self.fail_resp = _resp(b"503 Service Unavailable", OVERLOADED, ra)

    def connection_made(self, transport):  # type: ignore[override]
        self.t = transport

    def connection_lost(self, exc):  # type: ignore[override]
        self.closed = True

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self.buf += data
        if not self.busy:
            self._process()

    def healthy(self) -> bool:
        if self.idx != 3:
            return True
        return int((time.monotonic() - self.t0) / self.cfg.flap_s) % 2 == 0

    def _process(self) -> None:
        buf = self.buf
        while not self.busy and not self.closed:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            clen = 0
            i = head.find(b"content-length:")
            if i >= 0:
                clen = int(
                    head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None].strip()
                )
            if len(buf) < end + 4 + clen:
                return
            del buf[: end + 4 + clen]
            if head.startswith(b"get /stats"):
                body = json.dumps({"ok": Counters.ok, "fail": Counters.fail, "t": time.monotonic()}).encode()
                self.t.write(_resp(b"200 OK", body))
                continue
            if head.startswith(b"get "):
                self.t.write(_resp(b"200 OK", b'{"object":"list","data":[]}'))
                continue
            if not self.healthy():
                Counters.fail[self.idx] += 1
                self.t.write(self.fail_resp)
                continue
            self.busy = True
            self.loop.call_later(self.delay, self._answer)

    def _answer(self) -> None:
        self.busy = False
        if self.closed:
            return
        Counters.ok[self.idx] += 1
        self.t.write(self.ok_resp)
        if self.buf:
            self._process()


async def serve_upstreams(cfg: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    servers = []
    for idx, port in enumerate(cfg.ports):
        servers.append(
            await loop.create_server(
                lambda idx=idx: ReplicaProtocol(idx, cfg, t0), "127.0.0.1", port, backlog=1024
            )
        )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


# ================================================================== driver helpers
def cpu_s(pid: int) -> float:
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def machine_busy_s() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[i] for i in (0, 1, 2, 5, 6, 7) if i < len(v)) / CLK_TCK


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


VARIANTS = {
    # name: (strategy, breaker on?, replicas share one upstream model name?)
    "round_robin": ("round_robin", True, False),
    "random": ("random", True, False),
    "least_outstanding": ("least_outstanding", True, False),
    "p2c_ewma": ("p2c_ewma", True, False),
    "round_robin/no-breaker": ("round_robin", False, False),
    "p2c_ewma/no-breaker": ("p2c_ewma", False, False),
    "p2c_ewma/same-model-name": ("p2c_ewma", True, True),
    "p2c_ewma/same-model-name/no-breaker": ("p2c_ewma", False, True),
}
# Why "same-model-name": modelyard labels a deployment `preset/model` (providers/registry.py), so
# replicas of one upstream model at different base_urls share one label, and the router excludes
# and matches attempts *by label*: after one replica fails, every replica is excluded. The main
# variants give each replica its own upstream model name (fake-r0..fake-r3; the fake ignores it)
# so the labels differ; this variant is the configuration a user would write for 4 replicas.


def write_config(path: str, port: int, ports: list[int], strategy: str, breaker: bool, same: bool) -> None:
    lines = [
        "embedded_models: false",
        "cloud_models_from_env: false",
        "storage:",
        f"  database: sqlite:///{os.path.dirname(path)}/ledger.db",
        "server:",
        "  host: 127.0.0.1",
        f"  port: {port}",
        "models:",
        "  - name: fake",
        "    deployments:",
    ]
    for i, p in enumerate(ports):
        lines += [
            "      - provider: openai",
            "        model: " + ("fake" if same else f"fake-r{i}"),
            f"        base_url: http://127.0.0.1:{p}/v1",
            "        api_key: env:MODELYARD_BENCH_UPSTREAM_KEY",
            "        pricing: {input_per_mtok: 1, output_per_mtok: 2}",
        ]
    lines += ["    routing:", f"      strategy: {strategy}"]
    if not breaker:
        lines += ["      breaker: {consecutive_failures: 1000000}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class Poller(threading.Thread):
    """Polls /admin/deployments: breaker state of each replica over time."""

    def __init__(self, port: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/admin/deployments"
        self.interval = interval
        self.samples: list[list[dict]] = []
        self.ev = threading.Event()

    def run(self) -> None:
        while not self.ev.is_set():
            with contextlib.suppress(Exception):  # a missed sample is fine
                self.samples.append(get_json(self.url)["models"][0]["deployments"])
            self.ev.wait(self.interval)


def run_loadgen(port: int, conc: int, duration: float, out: str) -> dict:
    cmd = [
        sys.executable,
        os.path.join(SHARED, "loadgen.py"),
        "--url",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        "-c",
        str(conc),
        "-d",
        str(duration),
        "--warmup",
        "0",
        "--timeout",
        "30",
        "--json-out",
        out,
    ]
    p = subprocess.run(["timeout", str(int(duration + 90)), *cmd], capture_output=True, text=True)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (p.stdout + p.stderr)[-2000:]}


def measure(variant: str, args: argparse.Namespace, ports: list[int], gw_port: int, run_dir: str) -> dict:
    strategy, breaker, same = VARIANTS[variant]
    vdir = os.path.join(run_dir, variant.replace("/", "_"))
    os.makedirs(vdir, exist_ok=True)
    cfg = os.path.join(vdir, "modelyard.yaml")
    write_config(cfg, gw_port, ports, strategy, breaker, same)
    env = dict(os.environ, MODELYARD_BENCH_UPSTREAM_KEY="dummy", PYTHONPATH=args.src)
    env.pop("MODELYARD_MASTER_KEY", None)
    logf = open(os.path.join(vdir, "gateway.log"), "w")
    gw = subprocess.Popen(
        [
            args.python,
            "-m",
            "modelyard",
            "serve",
            "--config",
            cfg,
            "--port",
            str(gw_port),
            "--log-level",
            args.log_level,
        ],
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=vdir,
    )
    try:
        wait_port(gw_port, gw)
        run_loadgen(gw_port, args.concurrency, args.warmup, os.path.join(vdir, "warmup.json"))
        poller = Poller(gw_port)
        stats0 = get_json(f"http://127.0.0.1:{ports[0]}/stats")
        c0, b0, t0 = cpu_s(gw.pid), machine_busy_s(), time.time()
        poller.start()
        res = run_loadgen(gw_port, args.concurrency, args.duration, os.path.join(vdir, "loadgen.json"))
        poller.ev.set()
        c1, b1, t1 = cpu_s(gw.pid), machine_busy_s(), time.time()
        stats1 = get_json(f"http://127.0.0.1:{ports[0]}/stats")
        poller.join(2)
    finally:
        stop(gw)
        logf.close()
    ok = [b - a for a, b in zip(stats0["ok"], stats1["ok"], strict=True)]
    fail = [b - a for a, b in zip(stats0["fail"], stats1["fail"], strict=True)]
    client_ok = res.get("requests_ok", 0)
    client_err = res.get("errors", 0)
    sent = client_ok + client_err
    lat = res.get("latency", {})
    samples = poller.samples
    flap_open = sum(1 for s in samples if s[3]["breaker"] != "closed") / len(samples) if samples else None
    last = samples[-1] if samples else []
    wall = t1 - t0
    gw_cpu = c1 - c0
    out = {
        "variant": variant,
        "strategy": strategy,
        "breaker": breaker,
        "requests": sent,
        "ok": client_ok,
        "errors": client_err,
        "error_kinds": res.get("error_kinds", {}),
        "error_rate": client_err / sent if sent else None,
        "rps": client_ok / wall if wall else None,
        "p50_ms": lat.get("p50_ms"),
        "p90_ms": lat.get("p90_ms"),
        "p99_ms": lat.get("p99_ms"),
        "max_ms": lat.get("max_ms"),
        "upstream_ok": ok,
        "upstream_503": fail,
        "share_ok": [x / sum(ok) if sum(ok) else None for x in ok],
        "attempts_per_request": (sum(ok) + sum(fail)) / sent if sent else None,
        "flap_breaker_not_closed_share": flap_open,
        "final_state": [
            {
                k: d.get(k)
                for k in ("deployment", "ewma_latency_ms", "breaker", "penalty", "served", "failures")
            }
            for d in last
        ],
        "gateway_cpu_pct": 100 * gw_cpu / wall if wall else None,
        "gateway_cpu_ms_per_req": 1000 * gw_cpu / client_ok if client_ok else None,
        "foreign_cpu_pct": None,
        "machine_busy_pct": 100 * (b1 - b0) / wall if wall else None,
    }
    log(
        f"{variant:24s} p50 {out['p50_ms']} p99 {out['p99_ms']} ms  err {client_err}/{sent}  "
        f"share {[round(100 * s, 1) if s is not None else None for s in out['share_ok']]}  "
        f"503s {fail}  att/req {out['attempts_per_request']:.3f}  flap-breaker-open {flap_open}"
    )
    return out


def fmt(v, nd=1, pct=False):
    if v is None:
        return "–"
    return f"{100 * v:.{nd}f}%" if pct else f"{v:,.{nd}f}"


def render(results: list[dict], meta: dict) -> str:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)

    def med(rs: list[dict], k: str) -> float | None:
        vals = [r[k] for r in rs if r[k] is not None]
        return statistics.median(vals) if vals else None

    lines = [
        "| variant | runs | req/s | mean ms (= clients / req/s) | p50 ms | p90 ms | p99 ms | client errors | share r0-fast / r1-fast / r2-slow / r3-flap (of 200s) | 503s from r3 | upstream attempts / request | r3 breaker open (share of time) | gateway CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        rs = by.get(variant)
        if not rs:
            continue
        shares = [statistics.median([r["share_ok"][i] or 0 for r in rs]) for i in range(4)]
        p99s = [r["p99_ms"] for r in rs if r["p99_ms"] is not None]
        p99 = fmt(med(rs, "p99_ms"), 1) + (f" ({min(p99s):.1f}–{max(p99s):.1f})" if len(p99s) > 1 else "")
        errs = sum(r["errors"] for r in rs)
        sent = sum(r["requests"] for r in rs)
        lines.append(
            f"| {variant} | {len(rs)} | {fmt(med(rs, 'rps'), 0)} | {fmt(meta['concurrency'] * 1000 / med(rs, 'rps'), 1)} | "
            f"{fmt(med(rs, 'p50_ms'), 1)} | {fmt(med(rs, 'p90_ms'), 1)} | {p99} | "
            f"{errs} / {sent:,} ({100 * errs / sent if sent else 0:.2f}%) | "
            + " / ".join(f"{100 * s:.1f}%" for s in shares)
            + f" | {int(statistics.median([r['upstream_503'][3] for r in rs])):,} | "
            f"{fmt(med(rs, 'attempts_per_request'), 3)} | {fmt(med(rs, 'flap_breaker_not_closed_share'), 0, pct=True)} | "
            f"{fmt(med(rs, 'gateway_cpu_pct'), 0)}% |"
        )
    head = (
        f"{meta['date']}, modelyard {meta['commit']}, {meta['rounds']} round(s), "
        f"{meta['concurrency']} clients x {meta['duration']} s per variant (after {meta['warmup']} s warm-up); "
        f"r0/r1 {meta['fast_ms']} ms, r2 {meta['slow_ms']} ms, r3 {meta['fast_ms']} ms flapping "
        f"{meta['flap_s']} s up / {meta['flap_s']} s fast 503"
        + (f" (Retry-After: {meta['flap_retry_after']})" if meta["flap_retry_after"] else " (no Retry-After)")
        + f". Machine busy (all processes): {', '.join(str(round(r['machine_busy_pct'])) + '%' for r in results)}."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve-upstreams", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ports", type=lambda s: [int(x) for x in s.split(",")], default=None)
    ap.add_argument("--fast-ms", type=float, default=10.0)
    ap.add_argument("--slow-ms", type=float, default=50.0)
    ap.add_argument("--flap-s", type=float, default=2.0)
    ap.add_argument("--flap-retry-after", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--port-base", type=int, default=18400)
    ap.add_argument(
        "--log-level", default="warning", help="gateway log level (default warning: no access log)"
    )
    ap.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    ap.add_argument(
        "--src", default=None, help="modelyard source dir (default: a git-archive snapshot of HEAD)"
    )
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--render", nargs="+", help="only re-render the table from these balancing.json files")
    args = ap.parse_args()

    if args.render:
        results, meta = [], None
        for path in args.render:
            with open(path) as f:
                d = json.load(f)
            results += d["results"]
            meta = meta or d["meta"]
        print(render(results, meta))
        return

    if args.serve_upstreams:
        try:
            import uvloop  # type: ignore

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(serve_upstreams(args))
        return

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = args.out_dir or os.path.join(HERE, "out", f"balancing-{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    snap = None
    if args.src is None:
        snap = tempfile.mkdtemp(prefix="modelyard-snap-")
        subprocess.run(f"git archive HEAD src | tar -x -C {snap}", shell=True, cwd=REPO, check=True)
        args.src = os.path.join(snap, "src")
    ports = [args.port_base + 1 + i for i in range(4)]
    gw_port = args.port_base
    up = subprocess.Popen(
        [
            args.python,
            os.path.abspath(__file__),
            "--serve-upstreams",
            "--ports",
            ",".join(map(str, ports)),
            "--fast-ms",
            str(args.fast_ms),
            "--slow-ms",
            str(args.slow_ms),
            "--flap-s",
            str(args.flap_s),
            "--flap-retry-after",
            str(args.flap_retry_after),
        ],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(run_dir, "upstreams.log"), "w"),
        text=True,
    )
    results: list[dict] = []
    variants = [v for v in args.variants.split(",") if v]
    t_start = time.time()
    try:
        up.stdout.readline()  # "ready"
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
            for v in order:
                r = measure(v, args, ports, gw_port, os.path.join(run_dir, f"round{rnd + 1}"))
                r["round"] = rnd + 1
                results.append(r)
    finally:
        stop(up)
        if snap:
            subprocess.run(["rm", "-rf", snap])
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
        "wall_s": round(time.time() - t_start),
        "commit": commit,
        "python": platform.python_version(),
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "duration": args.duration,
        "warmup": args.warmup,
        "fast_ms": args.fast_ms,
        "slow_ms": args.slow_ms,
        "flap_s": args.flap_s,
        "flap_retry_after": args.flap_retry_after,
        "log_level": args.log_level,
        "nproc": os.cpu_count(),
    }
    with open(os.path.join(run_dir, "balancing.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    md = render(results, meta)
    with open(os.path.join(run_dir, "balancing.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"done in {meta['wall_s']} s; results in {run_dir}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What keys, budgets, rate limits and the ledger cost on the request path.

Three gateways (one model, one OpenAI-compatible deployment on the shared fake upstream at 0 ms),
started once and measured alternately, --rounds times, at each --concurrency (wrk -t1 -cN,
keep-alive, non-streaming, the shared wrk_post.lua body):

  a  anon        no master key, anonymous callers: no admission reservation, one ledger row per
                 attempt settled in batches (the default). SQLite ledger.
  b  key-sqlite  master key set; requests carry a virtual key with a monthly budget and RPM/TPM
                 limits (high enough never to refuse): auth lookup (cached), RPM/TPM increment-on-
                 check (memory), a durable reservation on SQLite before the upstream call, and the
                 settlement (ledger row + budget update) in group-commit batches.
  n  key-sqlite-normal  (opt-in: --variants …,n:key-sqlite-normal) b with storage.sqlite_synchronous:
                 normal (no fsync per commit).
  c  key-pg      as b, with PostgreSQL storage (env:MODELYARD_DATABASE_URL) and Redis rate limits.
  l  key-sqlite-leased  (opt-in) b with storage.reservations: leased (per-process budget leases).
  p  key-pg-leased      (opt-in) c with storage.reservations: leased.
  y  key-pg@TREE  (with --keyed-baseline-src) c on another source tree, measured alternately with the
                 others: a same-run A/B of a change to the keyed path. --baseline-variants a,b adds
                 a@TREE and b@TREE too (an A/B of every variant).

Per point: gateway CPU (utime+stime of its PID from /proc) per successful request, throughput,
p50/p99 (wrk), and whether the ledger kept up: ledger rows for this gateway's requests counted
right when wrk ends and again once drained (vs the requests wrk completed). For c, rows are
counted by the key's id (the `test` database is shared with other engineers' tests); the CPU of
the postgres and redis-server processes over the window is reported too (shared servers: it
includes whatever else used them).

Optionally (--profile) py-spy records each variant under wrk at each concurrency (Python-level,
all threads, 200 Hz) and the summaries (profile_summary.py) go next to the results.

  .venv/bin/python benchmarks/accounting_overhead.py                  # ~4 min
  .venv/bin/python benchmarks/accounting_overhead.py --profile        # + ~1 min

Environment: MODELYARD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test),
MODELYARD_BENCH_REDIS (default redis://127.0.0.1:6379/0). Loopback only; every process started is
stopped by PID. Writes accounting.json + accounting.md into --out-dir
(default benchmarks/out/accounting-<UTC time>/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("SHARED_BENCH", "/work/shared/bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("MODELYARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
MASTER = "bench-master-" + os.urandom(8).hex()
BODY = json.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32},
    separators=(",", ":"),
)
VARIANTS = ("a:anon", "b:key-sqlite", "c:key-pg")


def log(msg: str) -> None:
    print("[accounting {}] {}".format(time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def thread_cpu_s(pid: int) -> dict[str, float]:
    """utime/stime of the main thread (the event loop) and of all other threads (the SQLite
    writer/reader pools, aiohttp's resolver...) of one process, seconds."""
    out = {"main_user": 0.0, "main_sys": 0.0, "threads_user": 0.0, "threads_sys": 0.0}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        who = "main" if int(tid) == pid else "threads"
        out[who + "_user"] += int(fields[11]) / CLK_TCK
        out[who + "_sys"] += int(fields[12]) / CLK_TCK
    return out


def comm_cpu_s(names: tuple[str, ...]) -> dict[int, float]:
    """CPU seconds per PID of every process whose comm starts with one of ``names`` (postgres,
    redis); compare two readings with :func:`cpu_delta` (backends come and go)."""
    total: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1 : st.rindex(")")]
        if comm.startswith(names):
            fields = st.rsplit(")", 1)[1].split()
            total[int(d)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def cpu_delta(a: dict[int, float], b: dict[int, float]) -> float:
    """CPU used between two readings by the PIDs alive at both, plus PIDs that started between."""
    return sum(b[p] - a.get(p, 0.0) for p in b)


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
    if proc.poll() is not None:
        log(f"pid {proc.pid} had already exited with {proc.returncode} (negative: killed by that signal)")
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_json(url: str, body: dict, key: str) -> dict:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wrk(port: int, key: str, conc: int, duration: int) -> dict:
    env = dict(os.environ, WRK_BODY=BODY, WRK_API_KEY=key)
    cmd = [
        "wrk",
        "-t1",
        f"-c{conc}",
        f"-d{duration}s",
        "--latency",
        "-s",
        os.path.join(SHARED, "wrk_post.lua"),
        f"http://127.0.0.1:{port}/v1/chat/completions",
    ]
    p = subprocess.run(["timeout", str(duration + 30), *cmd], env=env, capture_output=True, text=True)
    out = p.stdout
    res: dict = {"requests": 0, "duration_s": 0.0}
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["duration_s"] = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    for q, v, u in re.findall(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        res[f"p{q}_ms"] = float(v) / 1000 if u == "us" else (float(v) * 1000 if u == "s" else float(v))
    if not m and p.returncode:
        res["raw"] = (out + p.stderr)[-1000:]
    return res


class Gateway:
    def __init__(
        self, variant: str, port: int, upstream_port: int, run_dir: str, args: argparse.Namespace
    ) -> None:
        self.variant = variant
        self.port = port
        self.dir = os.path.join(run_dir, variant.replace(":", "-"))
        os.makedirs(self.dir, exist_ok=True)
        self.db = os.path.join(self.dir, "ledger.db")
        keyed = variant[0] in "bcnylp"
        pg = variant[0] in "cyp"
        old = variant.startswith("z")  # an older commit: no storage/ledger config keys
        lines = [
            "embedded_models: false",
            "cloud_models_from_env: false",
            "server:",
            "  host: 127.0.0.1",
            f"  port: {port}",
        ]
        if keyed:
            lines.append("  master_key: env:MODELYARD_MASTER_KEY")
        if not old:
            lines += [
                "storage:",
                "  database: " + ("env:MODELYARD_DATABASE_URL" if pg else f"sqlite:///{self.db}"),
            ]
            if variant[0] == "n":
                lines.append("  sqlite_synchronous: normal")
            if variant[0] in "lp":
                lines.append("  reservations: leased")
        if pg:
            lines += ["rate_limits:", "  backend: redis", "  redis_url: env:MODELYARD_REDIS_URL"]
        lines += [
            "models:",
            "  - name: fake",
            "    deployments:",
            "      - provider: openai",
            "        model: fake",
            f"        base_url: http://127.0.0.1:{upstream_port}/v1",
            "        api_key: env:MODELYARD_BENCH_UPSTREAM_KEY",
        ]
        if not old:
            lines.append("        pricing: {input_per_mtok: 2.5, output_per_mtok: 10}")
        cfg = os.path.join(self.dir, "modelyard.yaml")
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(
            os.environ,
            MODELYARD_BENCH_UPSTREAM_KEY="dummy",
            PYTHONPATH=args.old_src if old else args.keyed_src if "@" in variant else args.src,
            MODELYARD_HOME=self.dir,
        )
        env.pop("MODELYARD_MASTER_KEY", None)
        if keyed:
            env["MODELYARD_MASTER_KEY"] = MASTER
        if pg:
            env["MODELYARD_DATABASE_URL"] = PG
            env["MODELYARD_REDIS_URL"] = REDIS
        self.logf = open(os.path.join(self.dir, "gateway.log"), "w")
        self.proc = subprocess.Popen(
            [
                args.python,
                "-m",
                "modelyard",
                "serve",
                "--config",
                cfg,
                "--port",
                str(port),
                "--log-level",
                args.log_level,
            ],
            env=env,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        self.pid = self.proc.pid
        wait_port(port, self.proc)
        self.key = ""
        self.key_id: str | None = None
        if keyed:
            created = post_json(
                f"http://127.0.0.1:{port}/admin/keys",
                {
                    "name": f"bench-{variant}",
                    "budgets": [{"period": "monthly", "limit_usd": 1_000_000}],
                    "rpm": 100_000_000,
                    "tpm": 10_000_000_000,
                },
                MASTER,
            )
            self.key, self.key_id = created["key"], created["id"]
        self.pg = pg

    def ledger_rows(self) -> int:
        if self.variant.startswith("z"):
            return 0
        if self.pg:
            import asyncio

            import asyncpg  # in .venv (modelyard depends on it)

            async def count() -> int:
                conn = await asyncpg.connect(PG)
                try:
                    return await conn.fetchval(
                        "SELECT count(*) FROM public.ledger WHERE key_id = $1", self.key_id
                    )
                finally:
                    await conn.close()

            return asyncio.run(count())
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        finally:
            conn.close()

    def stop(self) -> None:
        stop(self.proc)
        self.logf.close()


def measure(gw: Gateway, conc: int, args: argparse.Namespace) -> dict:
    wrk(gw.port, gw.key, conc, args.warmup)
    rows0 = wait_drained(gw, None, 5.0)
    th0 = thread_cpu_s(gw.pid)
    c0, s0, b0, t0 = cpu_s(gw.pid), comm_cpu_s(("postgres", "redis-server")), machine_busy_s(), time.time()
    r = wrk(gw.port, gw.key, conc, args.duration)
    c1, s1, b1, t1 = cpu_s(gw.pid), comm_cpu_s(("postgres", "redis-server")), machine_busy_s(), time.time()
    th1 = thread_cpu_s(gw.pid)
    rows_end = gw.ledger_rows()
    t_end = time.time()
    expected = rows0 + r["requests"]
    rows_final = wait_drained(gw, expected, 15.0)
    drain_s = time.time() - t_end
    ok = r["requests"] - r["non_2xx"]
    wall = t1 - t0
    res = {
        "variant": gw.variant,
        "concurrency": conc,
        "requests": r["requests"],
        "errors": r["non_2xx"] + r["socket_errors"],
        "rps": ok / r["duration_s"] if r["duration_s"] else 0.0,
        "p50_ms": r.get("p50_ms"),
        "p99_ms": r.get("p99_ms"),
        "cpu_ms_per_req": 1000 * (c1 - c0) / ok if ok else None,
        "gateway_cpu_pct": 100 * (c1 - c0) / wall,
        "cpu_split_ms_per_req": {k: round(1000 * (th1[k] - th0[k]) / ok, 4) if ok else None for k in th0},
        "store_servers_cpu_pct": 100 * cpu_delta(s0, s1) / wall,
        "machine_busy_pct": 100 * (b1 - b0) / wall,
        "ledger_rows_new_at_end": rows_end - rows0,
        "ledger_rows_new_final": rows_final - rows0,
        "ledger_backlog_at_end": r["requests"] - (rows_end - rows0),
        "drain_s": round(drain_s, 2),
    }
    if "raw" in r:
        res["wrk_raw"] = r["raw"]
    log(
        f"{gw.variant:13s} c={conc:<3d} {res['rps']:7.0f} req/s  CPU {res['cpu_ms_per_req'] or 0:.3f} ms/req  "
        f"p50 {res['p50_ms']} p99 {res['p99_ms']} ms  err {res['errors']}  ledger +{res['ledger_rows_new_at_end']}"
        f" at end, +{res['ledger_rows_new_final']} final / {r['requests']} sent (drain {res['drain_s']} s)  "
        f"store-servers CPU {res['store_servers_cpu_pct']:.0f}%  machine {res['machine_busy_pct']:.0f}%  "
        f"split {res['cpu_split_ms_per_req']}"
    )
    return res


def wait_drained(gw: Gateway, expected: int | None, timeout: float) -> int:
    """Ledger row count once it stops growing (expected=None) or reaches ``expected``."""
    if gw.variant.startswith("z"):
        return 0  # the older commit has no ledger
    t0 = time.time()
    last = gw.ledger_rows()
    while time.time() - t0 < timeout:
        time.sleep(0.2)
        n = gw.ledger_rows()
        if expected is not None and n >= expected:
            return n
        if expected is None and n == last:
            return n
        last = n
    return last


def profile(gw: Gateway, conc: int, out_dir: str, args: argparse.Namespace) -> dict:
    spy = os.path.join(REPO, ".venv", "bin", "py-spy")
    name = gw.variant.replace(":", "-") + f"-c{conc}"
    raw = os.path.join(out_dir, f"profile-{name}.txt")
    wrk_proc = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{conc}",
            f"-d{args.profile_s + 4}s",
            "-s",
            os.path.join(SHARED, "wrk_post.lua"),
            f"http://127.0.0.1:{gw.port}/v1/chat/completions",
        ],
        env=dict(os.environ, WRK_BODY=BODY, WRK_API_KEY=gw.key),
        stdout=subprocess.DEVNULL,
    )
    time.sleep(2)
    p = subprocess.run(
        [spy, "record", "-r", "200", "-d", str(args.profile_s), "-f", "raw", "-o", raw, "--pid", str(gw.pid)],
        capture_output=True,
        text=True,
    )
    wrk_proc.wait()
    summ = os.path.join(out_dir, f"profile-{name}.summary.md")
    if os.path.exists(raw):
        s = subprocess.run(
            [sys.executable, os.path.join(HERE, "profile_summary.py"), raw, "--top", "30"],
            capture_output=True,
            text=True,
        )
        with open(summ, "w") as f:
            f.write(s.stdout)
    return {
        "variant": gw.variant,
        "concurrency": conc,
        "raw": raw,
        "summary": summ,
        "rc": p.returncode,
        "stderr": p.stderr[-500:],
    }


def fmt(v, nd=3):
    return "–" if v is None else f"{v:,.{nd}f}"


def render(results: list[dict], meta: dict) -> str:
    by: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        by.setdefault((r["variant"], r["concurrency"]), []).append(r)

    def med(rs, k):
        v = [r[k] for r in rs if r.get(k) is not None]
        return statistics.median(v) if v else None

    lines = [
        "| variant | conc | CPU ms/req (median; per round) | Δ CPU vs a | req/s | p50 ms | p99 ms | errors | ledger rows at wrk end / after drain / requests | drain s | pg+redis CPU |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for conc in meta["concurrency"]:
        base = med(by.get(("a:anon", conc), []), "cpu_ms_per_req")
        for v in meta["variants"]:
            rs = by.get((v, conc))
            if not rs:
                continue
            cpu = med(rs, "cpu_ms_per_req")
            rounds = ", ".join(fmt(r["cpu_ms_per_req"]) for r in rs)
            delta = "" if v.startswith("a") or cpu is None or base is None else f"{cpu - base:+.3f}"
            end = sum(r["ledger_rows_new_at_end"] for r in rs)
            final = sum(r["ledger_rows_new_final"] for r in rs)
            sent = sum(r["requests"] for r in rs)
            lines.append(
                f"| {v} | {conc} | **{fmt(cpu)}** ({rounds}) | {delta} | {fmt(med(rs, 'rps'), 0)} | "
                f"{fmt(med(rs, 'p50_ms'), 2)} | {fmt(med(rs, 'p99_ms'), 2)} | {sum(r['errors'] for r in rs)} | "
                f"{end:,} / {final:,} / {sent:,} | {fmt(max(r['drain_s'] for r in rs), 1)} | "
                f"{fmt(med(rs, 'store_servers_cpu_pct'), 0) + '%' if v[0] in 'cpy' else '–'} |"
            )
    lines += [
        "",
        "Where the gateway's CPU runs (ms per request, median over rounds; /proc/<pid>/task/<tid>/stat): "
        "the main thread is the event loop, the other threads are the SQLite writer/reader pools.",
        "",
        "| variant | conc | main thread user / sys | other threads user / sys |",
        "|---|---:|---:|---:|",
    ]
    for conc in meta["concurrency"]:
        for v in meta["variants"]:
            rs = [r for r in by.get((v, conc), []) if r.get("cpu_split_ms_per_req")]
            if not rs:
                continue
            m = {
                k: statistics.median([r["cpu_split_ms_per_req"][k] for r in rs])
                for k in rs[0]["cpu_split_ms_per_req"]
            }
            lines.append(
                f"| {v} | {conc} | {m['main_user']:.3f} / {m['main_sys']:.3f} | "
                f"{m['threads_user']:.3f} / {m['threads_sys']:.3f} |"
            )
    busy = [round(r["machine_busy_pct"]) for r in results]
    return (
        f"{meta['date']}, modelyard {meta['commit']}, {meta['rounds']} rounds alternating a→b→c, "
        f"wrk -t1 -cN {meta['duration']} s per point after {meta['warmup']} s warm-up, fake upstream 0 ms, "
        f"gateway log level {meta['log_level']}. Machine busy (all processes, % of one core) per point: "
        f"{min(busy)}–{max(busy)}%.\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--port-base", type=int, default=18500)
    ap.add_argument("--log-level", default="info", help="gateway log level (default info, as shipped)")
    ap.add_argument("--profile", action="store_true", help="py-spy the keyed variants under wrk -c16")
    ap.add_argument("--profile-s", type=int, default=8)
    ap.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    ap.add_argument(
        "--src", default=None, help="modelyard source dir (default: a git-archive snapshot of HEAD)"
    )
    ap.add_argument("--out-dir", default=None)
    ap.add_argument(
        "--baseline-commit",
        default=None,
        help="also measure anonymous requests on this older commit (variant z:anon@COMMIT; "
        "its config has no storage/pricing keys)",
    )
    ap.add_argument(
        "--keyed-baseline-src",
        default=None,
        help="also measure variant c (keys, PostgreSQL + Redis) on this modelyard source dir, as "
        "variant y:key-pg@<--keyed-baseline-label>",
    )
    ap.add_argument("--keyed-baseline-label", default="baseline")
    ap.add_argument(
        "--baseline-variants",
        default="",
        help="with --keyed-baseline-src: also measure these variant letters (e.g. a,b) on that tree, "
        "as <variant>@<label>, alternated with the others: a same-run A/B of any variant",
    )
    args = ap.parse_args()
    concs = [int(x) for x in args.concurrency.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    args.keyed_src = args.keyed_baseline_src and os.path.abspath(args.keyed_baseline_src)
    if args.keyed_src:
        variants.append(f"y:key-pg@{args.keyed_baseline_label}")
        for letter in filter(None, args.baseline_variants.split(",")):
            variants += [f"{v}@{args.keyed_baseline_label}" for v in VARIANTS if v[0] == letter]
    args.old_src = None
    old_snap = None
    if args.baseline_commit:
        old_snap = tempfile.mkdtemp(prefix="modelyard-old-")
        subprocess.run(
            f"git archive {args.baseline_commit} src | tar -x -C {old_snap}", shell=True, cwd=REPO, check=True
        )
        args.old_src = os.path.join(old_snap, "src")
        variants.append(f"z:anon@{args.baseline_commit[:7]}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = args.out_dir or os.path.join(HERE, "out", f"accounting-{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    snap = None
    if args.src is None:
        snap = tempfile.mkdtemp(prefix="modelyard-snap-")
        subprocess.run(f"git archive HEAD src | tar -x -C {snap}", shell=True, cwd=REPO, check=True)
        args.src = os.path.join(snap, "src")
    up_port = args.port_base + 9
    up = subprocess.Popen(
        [sys.executable, os.path.join(SHARED, "fake_upstream.py"), "--port", str(up_port)],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(run_dir, "upstream.log"), "w"),
    )
    gws: list[Gateway] = []
    results: list[dict] = []
    profiles: list[dict] = []
    t_start = time.time()
    try:
        wait_port(up_port, up)
        for i, v in enumerate(variants):
            gws.append(Gateway(v, args.port_base + i, up_port, run_dir, args))
            log(f"started {v} on :{args.port_base + i} (pid {gws[-1].pid})")
        for rnd in range(args.rounds):
            for conc in concs:
                order = gws[rnd % len(gws) :] + gws[: rnd % len(gws)]
                for gw in order:
                    r = measure(gw, conc, args)
                    r["round"] = rnd + 1
                    results.append(r)
        if args.profile:
            for conc in concs:
                for gw in gws:
                    profiles.append(profile(gw, conc, run_dir, args))
    finally:
        for gw in gws:
            gw.stop()
        stop(up)
        for d in (snap, old_snap):
            if d:
                shutil.rmtree(d, ignore_errors=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
        "wall_s": round(time.time() - t_start),
        "commit": commit,
        "python": platform.python_version(),
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "concurrency": concs,
        "log_level": args.log_level,
        "variants": variants,
        "pg": PG,
        "redis": REDIS,
    }
    with open(os.path.join(run_dir, "accounting.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "profiles": profiles}, f, indent=1)
    md = render(results, meta)
    with open(os.path.join(run_dir, "accounting.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"done in {meta['wall_s']} s; results in {run_dir}")


if __name__ == "__main__":
    main()

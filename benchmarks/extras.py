#!/usr/bin/env python3
"""modelyard-only measurements that the shared harness does not take.

Run by run_core.sh after the side-by-side runs (it can also run alone). Loopback only; every
process it starts is stopped by PID. Standard library only (+ wrk and py-spy if present).

  1. Idle RSS with no local models (benchmark config: embedded_models false, one OpenAI-compatible
     deployment): a fresh gateway, port open, no request yet, after --settle seconds; again after
     one request; and after the load below (VmRSS and VmHWM).
  2. ``x-modelyard-overhead-ms`` values (the gateway's own account of its time excluding the
     upstream call): non-streaming at concurrency 1 and 16, streaming at concurrency 1 (for a
     stream the header is written at the commit point, i.e. it covers time to the first event).
  3. Gateway CPU per request (utime+stime from /proc) under wrk at concurrency 16, for variants
     run back to back, alternating, --rounds times:
        baseline  modelyard as shipped (log level info: one access-log line per request)
        warning   --log-level warning (access log off)
        gc        info, plus gc.freeze() after imports and gc.set_threshold(100_000, 50, 100)
        warning+gc
     The variants other than baseline are experiments done from outside src/ (a CLI flag, or a
     launcher that sets the GC before running the same CLI); they size suggested changes.
  4. py-spy profiles of the baseline under wrk -c16: Python-level raw + SVG flamegraph, and a
     --native raw profile (libc/CPython frames: syscalls, GC), summarised by profile_summary.py.

Writes extras.json (and profile files) into --out-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("SHARED_BENCH", "/work/shared/bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = json.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32},
    separators=(",", ":"),
)


def log(msg: str) -> None:
    print("[extras {}] {}".format(time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes
def cpu_s(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kib(pid: int, key: str) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return time.time() - t0
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not open after %ss" % (port, timeout))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Gateway:
    def __init__(
        self,
        port: int,
        upstream_port: int,
        key: str,
        out_dir: str,
        name: str,
        log_level: str = "info",
        gc_tune: bool = False,
    ) -> None:
        env = dict(
            os.environ,
            GATEWAY_PORT=str(port),
            UPSTREAM_BASE="http://127.0.0.1:%d/v1" % upstream_port,
            GATEWAY_MODEL="fake",
            GATEWAY_API_KEY=key,
            BENCH_RUN_DIR=out_dir,
            MODELYARD_LOG_LEVEL=log_level,
        )
        if gc_tune:
            env["MODELYARD_BENCH_GC"] = "1"
        self.port = port
        self.log_path = os.path.join(out_dir, f"gateway-{name}.log")
        self.logf = open(self.log_path, "w")
        # modelyard_gateway.sh execs python, so proc.pid is the gateway's own PID
        self.proc = subprocess.Popen(
            [os.path.join(HERE, "modelyard_gateway.sh")], env=env, stdout=self.logf, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        self.start_s = wait_port(port, self.proc)

    def stop(self) -> None:
        stop(self.proc)
        self.logf.close()


# ------------------------------------------------------------------ a tiny HTTP/1.1 client
async def _request(reader, writer, req: bytes) -> tuple[int, dict[bytes, bytes], float, float]:
    """One request on a keep-alive connection: (status, headers, t_headers, t_end) relative to send."""
    t0 = time.perf_counter()
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    t_head = time.perf_counter() - t0
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            await reader.readexactly(size + 2)
    return status, headers, t_head, time.perf_counter() - t0


def _req_bytes(port: int, key: str, stream: bool) -> bytes:
    body = BODY if not stream else BODY[:-1] + ',"stream":true}'
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (port, key, len(body), body)
    ).encode()


async def _worker(port: int, req: bytes, n: int, out: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(n):
            status, headers, t_head, t_end = await _request(reader, writer, req)
            if status != 200:
                errors.append(status)
                continue
            ov = headers.get(b"x-modelyard-overhead-ms")
            out.append((float(ov) if ov is not None else None, t_head * 1000, t_end * 1000))
    finally:
        writer.close()


def pct(vals: list[float], q: float) -> float | None:
    s = sorted(v for v in vals if v is not None)
    if not s:
        return None
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 4)


def summary(vals: list[float]) -> dict:
    v = [x for x in vals if x is not None]
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "mean": round(statistics.fmean(v), 4),
        "p50": pct(v, 50),
        "p90": pct(v, 90),
        "p99": pct(v, 99),
        "max": round(max(v), 4),
    }


def overhead_samples(port: int, key: str, conc: int, per_worker: int, stream: bool, warm: int = 50) -> dict:
    req = _req_bytes(port, key, stream)

    async def go() -> tuple[list, list]:
        out: list = []
        errors: list = []
        await _worker(port, req, warm, [], [])  # warm-up, discarded
        await asyncio.gather(*(_worker(port, req, per_worker, out, errors) for _ in range(conc)))
        return out, errors

    t0 = time.time()
    out, errors = asyncio.run(go())
    return {
        "concurrency": conc,
        "stream": stream,
        "requests": len(out),
        "errors": len(errors),
        "wall_s": round(time.time() - t0, 2),
        "overhead_header_ms": summary([o[0] for o in out]),
        "client_ttfb_ms": summary([o[1] for o in out]),
        "client_total_ms": summary([o[2] for o in out]),
    }


# ------------------------------------------------------------------ wrk
def wrk(port: int, key: str, conc: int, duration: int) -> dict:
    env = dict(os.environ, WRK_BODY=BODY, WRK_API_KEY=key)
    cmd = [
        "wrk",
        "-t1",
        "-c%d" % conc,
        "-d%ds" % duration,
        "--latency",
        "-s",
        os.path.join(SHARED, "wrk_post.lua"),
        "http://127.0.0.1:%d/v1/chat/completions" % port,
    ]
    p = subprocess.run(["timeout", str(duration + 30), *cmd], env=env, capture_output=True, text=True)
    out = p.stdout
    res: dict = {}
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
    return res


def cpu_per_request(gw: Gateway, key: str, conc: int, duration: int, warmup: int) -> dict:
    wrk(gw.port, key, conc, warmup)
    c0, t0 = cpu_s(gw.pid), time.time()
    r = wrk(gw.port, key, conc, duration)
    c1, wall = cpu_s(gw.pid), time.time() - t0
    ok = max(1, r.get("requests", 0) - r["non_2xx"])
    r.update(
        rps=round(ok / r.get("duration_s", wall), 1),
        gateway_cpu_s=round(c1 - c0, 2),
        gateway_cpu_ms_per_req=round(1000 * (c1 - c0) / ok, 4),
        gateway_cpu_pct=round(100 * (c1 - c0) / wall, 1),
    )
    return r


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--gateway-port", type=int, default=18200)
    ap.add_argument("--upstream-port", type=int, default=18201)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--duration", type=int, default=6, help="seconds per CPU-per-request point")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile-s", type=int, default=8)
    ap.add_argument("--no-profile", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    key = "sk-" + os.urandom(24).hex()
    tools_py = os.environ.get("TOOLS_PY") or sys.executable
    res: dict = {
        "config": {"settle_s": a.settle, "duration_s": a.duration, "warmup_s": a.warmup, "rounds": a.rounds}
    }
    up_log = open(os.path.join(a.out_dir, "extras-upstream.log"), "w")
    up = subprocess.Popen(
        [
            tools_py,
            os.path.join(SHARED, "fake_upstream.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(a.upstream_port),
            "--chunk-delay-ms",
            "5",
            "--chunks",
            "8",
        ],
        stdout=up_log,
        stderr=subprocess.STDOUT,
    )
    gw = None
    try:
        wait_port(a.upstream_port, up)
        # 1 + 2: baseline instance
        log("starting modelyard (baseline, log level info)")
        gw = Gateway(a.gateway_port, a.upstream_port, key, a.out_dir, "baseline")
        time.sleep(a.settle)
        res["start_to_port_open_s"] = round(gw.start_s, 2)
        res["rss_idle_no_request_kib"] = mem_kib(gw.pid, "VmRSS")
        overhead_samples(gw.port, key, 1, 1, False, warm=1)
        time.sleep(1.0)
        res["rss_after_first_request_kib"] = mem_kib(gw.pid, "VmRSS")
        log(
            "idle RSS {:.1f} MiB (no request), {:.1f} MiB after one".format(
                res["rss_idle_no_request_kib"] / 1024, res["rss_after_first_request_kib"] / 1024
            )
        )
        log("x-modelyard-overhead-ms samples")
        res["overhead"] = [
            overhead_samples(gw.port, key, 1, 3000, False),
            overhead_samples(gw.port, key, 16, 300, False),
            overhead_samples(gw.port, key, 1, 150, True),
        ]
        for o in res["overhead"]:
            log(
                "  c=%d stream=%s header p50=%s p99=%s ms (client total p50 %s ms)"
                % (
                    o["concurrency"],
                    o["stream"],
                    o["overhead_header_ms"].get("p50"),
                    o["overhead_header_ms"].get("p99"),
                    o["client_total_ms"].get("p50"),
                )
            )
        if not a.no_profile and shutil.which("wrk"):
            pyspy = os.environ.get("PYSPY") or os.path.join(REPO, ".venv", "bin", "py-spy")
            if os.path.exists(pyspy):
                res["profiles"] = {}
                for name, extra in (
                    ("python", ["-f", "raw"]),
                    ("native", ["--native", "-f", "raw"]),
                    ("python-svg", ["-f", "flamegraph"]),
                ):
                    outp = os.path.join(
                        a.out_dir, "profile-{}.{}".format(name, "svg" if name.endswith("svg") else "txt")
                    )
                    load = subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            "import sys, json; sys.path.insert(0, %r); import extras; "
                            "print(json.dumps(extras.wrk(%d, %r, 16, %d)))"
                            % (HERE, gw.port, key, a.profile_s + 3),
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    time.sleep(1.5)
                    log("py-spy %s for %ds under wrk -c16" % (name, a.profile_s))
                    p = subprocess.run(
                        [
                            pyspy,
                            "record",
                            "-r",
                            "200",
                            "-d",
                            str(a.profile_s),
                            "--pid",
                            str(gw.pid),
                            "-o",
                            outp,
                            *extra,
                        ],
                        capture_output=True,
                        text=True,
                        timeout=a.profile_s + 60,
                    )
                    wout, _ = load.communicate(timeout=a.profile_s + 60)
                    res["profiles"][name] = {
                        "file": os.path.basename(outp),
                        "rc": p.returncode,
                        "py_spy_tail": (p.stdout + p.stderr).strip().splitlines()[-2:],
                        "load": json.loads(wout.strip().splitlines()[-1]) if wout.strip() else None,
                    }
            else:
                log(f"py-spy not found at {pyspy}: no profile")
        res["rss_after_load_kib"] = mem_kib(gw.pid, "VmRSS")
        res["vmhwm_after_load_kib"] = mem_kib(gw.pid, "VmHWM")
        gw.stop()
        gw = None

        # 3: CPU per request, variants alternating
        variants = [
            ("baseline", "info", False),
            ("warning", "warning", False),
            ("gc", "info", True),
            ("warning+gc", "warning", True),
        ]
        res["cpu_variants"] = {v[0]: [] for v in variants}
        for rnd in range(a.rounds):
            for name, level, gc_tune in variants if rnd % 2 == 0 else variants[::-1]:
                gw = Gateway(
                    a.gateway_port, a.upstream_port, key, a.out_dir, "variant-" + name, level, gc_tune
                )
                time.sleep(1.0)
                r = cpu_per_request(gw, key, 16, a.duration, a.warmup)
                gw.stop()
                gw = None
                res["cpu_variants"][name].append(r)
                log(
                    "  round %d %-10s rps=%s cpu=%s ms/req p50=%s ms"
                    % (rnd + 1, name, r["rps"], r["gateway_cpu_ms_per_req"], r.get("p50_ms"))
                )
    finally:
        if gw is not None:
            gw.stop()
        stop(up)
        up_log.close()
    with open(os.path.join(a.out_dir, "extras.json"), "w") as f:
        json.dump(res, f, indent=1)
    log("wrote {}".format(os.path.join(a.out_dir, "extras.json")))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Combine one run_core.sh run into summary.md (+ summary.json): modelyard vs LiteLLM vs direct.

    report.py OUT_DIR

Reads OUT_DIR/modelyard/results.json and OUT_DIR/litellm/results.json (written by the shared
harness's bench.py), OUT_DIR/extras/extras.json (extras.py) and OUT_DIR/versions.json, and checks
the targets. Standard library only.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

TARGETS = {
    "cpu_ms_per_req": 0.5,  # gateway CPU per request, ms (<=)
    "rps_ratio_vs_litellm": 20.0,  # sustained throughput, x LiteLLM's proxy (>=)
    "added_p50_c1_ms": 1.0,  # added latency p50 with one client (<=)
    "stream_first_token_ms": 1.0,  # added streaming first-token latency (<=)
    "idle_rss_mb": 150.0,  # idle RSS without local models, MB = 10^6 bytes (<=)
}


def load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def f(v, nd=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return ("%." + str(nd) + "f") % v
    return str(v)


def idx(res: dict | None) -> dict:
    return {} if not res else {(r["kind"], r["target"], r["concurrency"]): r for r in res["runs"]}


def lat(r: dict | None, sec: str, k: str):
    return None if not r else r.get(sec, {}).get(k)


def diff(a, b):
    return None if a is None or b is None else b - a


def best_rps(by: dict) -> tuple[float, int] | None:
    best = None
    for (kind, tgt, c), r in by.items():
        if kind != "nonstream" or tgt != "gateway":
            continue
        total = r.get("requests_ok", 0) + max(0, r.get("errors", 0))
        if total and max(0, r.get("errors", 0)) / total <= 0.001 and (best is None or r["rps"] > best[0]):
            best = (r["rps"], c)
    return best


def main() -> None:
    out = sys.argv[1]
    my, ll = (
        load(os.path.join(out, "modelyard", "results.json")),
        load(os.path.join(out, "litellm", "results.json")),
    )
    ex = load(os.path.join(out, "extras", "extras.json")) or {}
    ver = load(os.path.join(out, "versions.json")) or {}
    M, L = idx(my), idx(ll)
    concs = sorted({c for (k, t, c) in list(M) + list(L) if k == "nonstream"})
    sconcs = sorted({c for (k, t, c) in list(M) + list(L) if k == "stream"})
    S: dict = {"targets": {}}
    md: list[str] = []
    A = md.append

    A("## Non-streaming throughput (closed loop, wrk -t1, requests/s)")
    A("")
    A(
        "| conc | direct (modelyard run) | modelyard | modelyard/direct | direct (LiteLLM run) | LiteLLM | modelyard/LiteLLM |"
    )
    A("|---:|---:|---:|---:|---:|---:|---:|")
    for c in concs:
        dm, gm = M.get(("nonstream", "direct", c)), M.get(("nonstream", "gateway", c))
        dl, gl = L.get(("nonstream", "direct", c)), L.get(("nonstream", "gateway", c))
        rm, rl = (gm or {}).get("rps"), (gl or {}).get("rps")
        A(
            "| %d | %s | %s | %s | %s | %s | %s |"
            % (
                c,
                f((dm or {}).get("rps"), 0),
                f(rm, 0),
                f(rm / dm["rps"] if rm and dm and dm.get("rps") else None, 3),
                f((dl or {}).get("rps"), 0),
                f(rl, 1),
                f(rm / rl if rm and rl else None, 1) + ("x" if rm and rl else ""),
            )
        )
    bm, bl = best_rps(M), best_rps(L)
    ratio = bm[0] / bl[0] if bm and bl else None
    A("")
    A(
        f"Max sustained (<=0.1% errors): modelyard **{f(bm and bm[0], 0)}** req/s (c={bm and bm[1]}), LiteLLM **{f(bl and bl[0], 1)}** req/s (c={bl and bl[1]}): **{f(ratio, 1)}x**."
    )
    A("")
    S["targets"]["rps_ratio_vs_litellm"] = {
        "value": ratio,
        "target": ">= {:g}".format(TARGETS["rps_ratio_vs_litellm"]),
        "met": ratio is not None and ratio >= TARGETS["rps_ratio_vs_litellm"],
    }

    A("## Non-streaming latency (ms) and latency added over the direct upstream")
    A("")
    A(
        "| conc | direct p50 | direct p99 | modelyard p50 | modelyard p99 | +p50 | +p99 | LiteLLM p50 | LiteLLM p99 | +p50 | +p99 |"
    )
    A("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in concs:
        dm, gm = M.get(("nonstream", "direct", c)), M.get(("nonstream", "gateway", c))
        dl, gl = L.get(("nonstream", "direct", c)), L.get(("nonstream", "gateway", c))
        g = lambda r, k: lat(r, "latency", k)  # noqa: E731
        A(
            "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                c,
                f(g(dm, "p50_ms"), 3),
                f(g(dm, "p99_ms"), 3),
                f(g(gm, "p50_ms"), 3),
                f(g(gm, "p99_ms"), 3),
                f(diff(g(dm, "p50_ms"), g(gm, "p50_ms")), 3),
                f(diff(g(dm, "p99_ms"), g(gm, "p99_ms")), 3),
                f(g(gl, "p50_ms"), 2),
                f(g(gl, "p99_ms"), 2),
                f(diff(g(dl, "p50_ms"), g(gl, "p50_ms")), 2),
                f(diff(g(dl, "p99_ms"), g(gl, "p99_ms")), 2),
            )
        )
    A("")
    A(
        "Direct columns are from the modelyard run; LiteLLM's added latency is against the direct run of its own pass."
    )
    A("")
    add1 = diff(
        lat(M.get(("nonstream", "direct", 1)), "latency", "p50_ms"),
        lat(M.get(("nonstream", "gateway", 1)), "latency", "p50_ms"),
    )
    S["targets"]["added_p50_c1_ms"] = {
        "value": add1,
        "target": "<= {:g}".format(TARGETS["added_p50_c1_ms"]),
        "met": add1 is not None and add1 <= TARGETS["added_p50_c1_ms"],
    }

    A("## Gateway CPU per request (utime+stime from /proc, measured window only)")
    A("")
    A("| conc | modelyard ms/req | modelyard CPU % | LiteLLM ms/req | LiteLLM CPU % | LiteLLM/modelyard |")
    A("|---:|---:|---:|---:|---:|---:|")
    cpus = []
    for c in concs:
        gm, gl = M.get(("nonstream", "gateway", c)), L.get(("nonstream", "gateway", c))
        a, b = (gm or {}).get("gateway_cpu_ms_per_req"), (gl or {}).get("gateway_cpu_ms_per_req")
        if a is not None:
            cpus.append(a)
        A(
            "| %d | %s | %s | %s | %s | %s |"
            % (
                c,
                f(a, 3),
                f((gm or {}).get("gateway_cpu_pct"), 1),
                f(b, 2),
                f((gl or {}).get("gateway_cpu_pct"), 1),
                f(b / a if a and b else None, 0),
            )
        )
    for c in sconcs:
        gm, gl = M.get(("stream", "gateway", c)), L.get(("stream", "gateway", c))
        A(
            "| %d (stream) | %s | %s | %s | %s | - |"
            % (
                c,
                f((gm or {}).get("gateway_cpu_ms_per_req"), 3),
                f((gm or {}).get("gateway_cpu_pct"), 1),
                f((gl or {}).get("gateway_cpu_ms_per_req"), 2),
                f((gl or {}).get("gateway_cpu_pct"), 1),
            )
        )
    A("")
    worst = max(cpus) if cpus else None
    S["targets"]["cpu_ms_per_req"] = {
        "value": worst,
        "target": "<= {:g} (worst non-streaming point)".format(TARGETS["cpu_ms_per_req"]),
        "met": worst is not None and worst <= TARGETS["cpu_ms_per_req"],
    }

    if sconcs:
        A("## Streaming (loadgen.py --stream; upstream sends role chunk + 8 content chunks 5 ms apart)")
        A("")
        A(
            "| conc | target | TTFB p50 | first token p50 | first token p99 | total p50 | +TTFB p50 | +first token p50 | +first token p99 |"
        )
        A("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for c in sconcs:
            for name, by in (("modelyard", M), ("LiteLLM", L)):
                d, g = by.get(("stream", "direct", c)), by.get(("stream", "gateway", c))
                for label, r in ((f"direct ({name} run)", d), (name, g)):
                    if r is None:
                        continue
                    A(
                        "| %d | %s | %s | %s | %s | %s | %s | %s | %s |"
                        % (
                            c,
                            label,
                            f(lat(r, "ttfb", "p50_ms"), 3),
                            f(lat(r, "ttft", "p50_ms"), 3),
                            f(lat(r, "ttft", "p99_ms"), 3),
                            f(lat(r, "latency", "p50_ms"), 3),
                            f(diff(lat(d, "ttfb", "p50_ms"), lat(r, "ttfb", "p50_ms")), 3) if r is g else "",
                            f(diff(lat(d, "ttft", "p50_ms"), lat(r, "ttft", "p50_ms")), 3) if r is g else "",
                            f(diff(lat(d, "ttft", "p99_ms"), lat(r, "ttft", "p99_ms")), 3) if r is g else "",
                        )
                    )
        A("")
    ft = diff(
        lat(M.get(("stream", "direct", 1)), "ttft", "p50_ms"),
        lat(M.get(("stream", "gateway", 1)), "ttft", "p50_ms"),
    )
    S["targets"]["stream_first_token_ms"] = {
        "value": ft,
        "target": "<= {:g} (c=1, p50)".format(TARGETS["stream_first_token_ms"]),
        "met": ft is not None and ft <= TARGETS["stream_first_token_ms"],
    }

    A("## Memory (RSS of the gateway's process tree)")
    A("")
    A("| | modelyard | LiteLLM |")
    A("|---|---:|---:|")
    mib = lambda k: (f(my.get(k), 1) if my else "-", f(ll.get(k), 1) if ll else "-")  # noqa: E731
    A(
        "| idle after start-up + 2 probe requests (harness), MiB | {} | {} |".format(
            *mib("gateway_rss_idle_mib")
        )
    )
    A("| peak sampled during the runs, MiB | {} | {} |".format(*mib("gateway_rss_peak_sampled_mib")))
    A("| sum of VmHWM at the end, MiB | {} | {} |".format(*mib("gateway_vmhwm_sum_mib")))
    A(
        "| processes | {} | {} |".format(
            my and my.get("gateway_processes"), ll and ll.get("gateway_processes")
        )
    )
    idle_kib = ex.get("rss_idle_no_request_kib")
    if idle_kib:
        A(f"| idle, fresh start, no request yet (extras.py), MiB | {f(idle_kib / 1024, 1)} | - |")
        A(
            "| after one request / after ~30 s of load (extras.py), MiB | {} / {} (VmHWM {}) | - |".format(
                f(ex["rss_after_first_request_kib"] / 1024, 1),
                f(ex.get("rss_after_load_kib", 0) / 1024, 1),
                f(ex.get("vmhwm_after_load_kib", 0) / 1024, 1),
            )
        )
    A("")
    idle_candidates = [x for x in (idle_kib and idle_kib / 1024, my and my.get("gateway_rss_idle_mib")) if x]
    idle_mb = max(idle_candidates) * 1.048576 if idle_candidates else None
    S["targets"]["idle_rss_mb"] = {
        "value": idle_mb,
        "target": "<= {:g} MB (larger of the two idle readings)".format(TARGETS["idle_rss_mb"]),
        "met": idle_mb is not None and idle_mb <= TARGETS["idle_rss_mb"],
    }

    if ex.get("overhead"):
        A("## `x-modelyard-overhead-ms` header (gateway's own time, excluding the upstream call)")
        A("")
        A(
            "| load | requests | header p50 | header p90 | header p99 | header max | client TTFB p50 | client total p50 |"
        )
        A("|---|---:|---:|---:|---:|---:|---:|---:|")
        for o in ex["overhead"]:
            h = o["overhead_header_ms"]
            A(
                "| %s, c=%d | %d | %s | %s | %s | %s | %s | %s |"
                % (
                    "stream" if o["stream"] else "non-stream",
                    o["concurrency"],
                    o["requests"],
                    f(h.get("p50"), 3),
                    f(h.get("p90"), 3),
                    f(h.get("p99"), 3),
                    f(h.get("max"), 3),
                    f(o["client_ttfb_ms"].get("p50"), 3),
                    f(o["client_total_ms"].get("p50"), 3),
                )
            )
        A("")
    if ex.get("cpu_variants"):
        A("## modelyard CPU per request by variant (wrk -c16, alternating, median of rounds)")
        A("")
        A("| variant | rounds | CPU ms/req (median) | each round | req/s (median) | p50 ms (median) |")
        A("|---|---:|---:|---|---:|---:|")
        base = None
        for name, rs in ex["cpu_variants"].items():
            if not rs:
                continue
            med = statistics.median(r["gateway_cpu_ms_per_req"] for r in rs)
            base = med if name == "baseline" else base
            A(
                "| %s | %d | %s%s | %s | %s | %s |"
                % (
                    name,
                    len(rs),
                    f(med, 3),
                    "" if name == "baseline" or not base else " (%+.0f%%)" % (100 * (med / base - 1)),
                    ", ".join(f(r["gateway_cpu_ms_per_req"], 3) for r in rs),
                    f(statistics.median(r["rps"] for r in rs), 0),
                    f(statistics.median(r.get("p50_ms") or 0 for r in rs), 2),
                )
            )
        A("")

    A("## Targets")
    A("")
    A("| target | value | goal | met |")
    A("|---|---:|---|---|")
    names = {
        "cpu_ms_per_req": "gateway CPU per request, ms",
        "rps_ratio_vs_litellm": "sustained throughput vs LiteLLM, x",
        "added_p50_c1_ms": "added latency p50 at c=1, ms",
        "stream_first_token_ms": "streaming first-token overhead, ms",
        "idle_rss_mb": "idle RSS without local models, MB",
    }
    for k, t in S["targets"].items():
        A(
            "| {} | {} | {} | {} |".format(
                names[k], f(t["value"], 3), t["target"], "yes" if t["met"] else "**NO**"
            )
        )
    A("")
    A("## Noise")
    A("")
    for name, res in (("modelyard pass", my), ("LiteLLM pass", ll)):
        if not res:
            A(f"- {name}: no results")
            continue
        fo = [r.get("foreign_cpu_pct") or 0 for r in res["runs"]]
        st = [r.get("cpu_steal_pct") or 0 for r in res["runs"]]
        A(
            "- {}: CPU used by other processes during measured runs max {:.1f}% / mean {:.1f}% of one core; steal max {:.2f}%{}".format(
                name, max(fo), statistics.fmean(fo), max(st), " (contaminated: > 10%)" if max(fo) > 10 else ""
            )
        )
    A("")
    if ver:
        A("## Versions and machine")
        A("")
        for k, v in ver.items():
            A(f"- {k}: {v}")
        for name, res in (("modelyard pass", my), ("LiteLLM pass", ll)):
            if res:
                for k, v in res.get("meta", {}).items():
                    if k in (
                        "gateway packages",
                        "machine",
                        "load generator",
                        "fake upstream",
                        "network check",
                        "gateway start-up to first 200",
                        "date (UTC)",
                    ) and v not in ("n/a",):
                        A(f"- {name}, {k}: {v}")
        A("")
    text = "\n".join(md)
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(S, fh, indent=1)
    print(text)


if __name__ == "__main__":
    main()

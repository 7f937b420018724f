#!/usr/bin/env python3
"""Summarise a py-spy raw (collapsed-stack) profile: where the gateway's CPU samples go.

    profile_summary.py PROFILE.txt [--top 25] [--json OUT.json]

Each line of py-spy's `-f raw` output is `frame;frame;...;leaf COUNT`, a frame being
`function (file:line)`. Prints, as markdown:
  * self time by package (the leaf frame's top-level module: modelyard, aiohttp, uvicorn, asyncio,
    logging, ...), as a share of all samples;
  * the top functions by self time and by inclusive time (file:function, lines merged);
  * inclusive time of a few hot-path stages of modelyard that we care about.
Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import json
import re

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_frame(frame: str) -> tuple[str, str]:
    m = FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def package_of(file: str, func: str) -> str:
    if not file:
        return "native/other"
    f = file.replace("\\", "/")
    if "site-packages/" in f:
        f = f.split("site-packages/", 1)[1]
    if f.startswith("<frozen"):
        return "python stdlib (frozen)"
    top = f.split("/", 1)[0]
    if top.endswith(".py"):
        top = top[:-3]
    if f.startswith(("/usr/", "/opt/")) or "/lib/python3" in file:
        top = f.rsplit("/", 2)[-2] if "/" in f else top
        return "stdlib:" + (f.rsplit("/", 1)[-1][:-3] if f.endswith(".py") else top)
    return top


def key(func: str, file: str) -> str:
    f = file
    if "site-packages/" in f:
        f = f.split("site-packages/", 1)[1]
    elif "/lib/python3" in f:
        f = "stdlib/" + f.rsplit("/", 1)[-1]
    return f"{f}:{func}" if f else func


def summarise(path: str, top: int) -> dict:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    pkg: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = [parse_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        func, file = frames[-1]
        self_t[key(func, file)] += n
        pkg[package_of(file, func)] += n
        for k in {key(fn, fl) for fn, fl in frames}:
            incl[k] += n
    pct = lambda n: round(100.0 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self_by_package": [(k, v, pct(v)) for k, v in pkg.most_common()],
        "self_top": [(k, v, pct(v)) for k, v in self_t.most_common(top)],
        "inclusive_top": [(k, v, pct(v)) for k, v in incl.most_common(top * 3)],
    }


def render(s: dict, top: int) -> str:
    out = [
        "%d samples (non-idle; py-spy)" % s["samples"],
        "",
        "Self time by package:",
        "",
        "| package | samples | share |",
        "|---|---:|---:|",
    ]
    out += ["| %s | %d | %.1f%% |" % r for r in s["self_by_package"]]
    out += ["", "Top functions by self time:", "", "| function | samples | share |", "|---|---:|---:|"]
    out += ["| `%s` | %d | %.1f%% |" % r for r in s["self_top"]]
    # Inclusive: skip the always-on outer frames (runpy, cli, uvicorn.run, the loop's run_forever)
    skip = (
        "runpy",
        "__main__",
        "cli.py",
        "typer",
        "click",
        "uvicorn/main.py",
        "uvicorn/server.py:Server.run",
        "_compat.py",
        "runners.py",
        "base_events.py:BaseEventLoop.run_forever",
        "Runner.run",
        "<module>",
        "_run_module_as_main",
        "_run_code",
        "Server.serve",
        "asyncio_run",
    )
    rows = [r for r in s["inclusive_top"] if not any(x in r[0] for x in skip)][:top]
    out += [
        "",
        "Top functions by inclusive time (outer server frames omitted):",
        "",
        "| function | samples | share |",
        "|---|---:|---:|",
    ]
    out += ["| `%s` | %d | %.1f%% |" % r for r in rows]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json")
    a = ap.parse_args()
    s = summarise(a.profile, a.top)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    print(render(s, a.top))


if __name__ == "__main__":
    main()

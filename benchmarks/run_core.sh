#!/usr/bin/env bash
# One command, one run: the fast fake upstream measured directly, through modelyard and through
# LiteLLM's proxy (1.108.7, one worker, no database), on loopback, with the shared harness in
# /work/shared/bench (read in place), then modelyard-only extras (idle RSS, overhead header,
# CPU-per-request variants, py-spy profiles), then a combined summary.
#
#   benchmarks/run_core.sh                  # ~10 minutes; results in benchmarks/out/<UTC time>/
#
# Knobs (environment): DURATION (10 s per point), WARMUP (2 s), CONCURRENCY ("1 16 64"),
# STREAM_CONCURRENCY ("1 16"), SKIP_LITELLM=1 (modelyard only), SKIP_EXTRAS=1, EXTRAS_ROUNDS (2),
# NO_PROFILE=1, BENCH_ROOT (/tmp/litellm-bench: LiteLLM + tools venvs), SHARED_BENCH
# (/work/shared/bench), MODELYARD_SRC (head = git-archive snapshot of HEAD, default; worktree), PORT_BASE (18300: harness uses +0/+1, extras +10/+11), OUT_DIR.
set -euo pipefail
# The whole body is one function, read before it runs: editing this file mid-run is harmless.
main() {
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SHARED="${SHARED_BENCH:-/work/shared/bench}"
TS="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT_DIR:-$HERE/out/$TS}"
PORT_BASE="${PORT_BASE:-18300}"
mkdir -p "$OUT"
export SHARED_BENCH="$SHARED"
export BENCH_ROOT="${BENCH_ROOT:-/tmp/litellm-bench}"
export DURATION="${DURATION:-10}" WARMUP="${WARMUP:-2}"
export CONCURRENCY="${CONCURRENCY:-1 16 64}" STREAM_CONCURRENCY="${STREAM_CONCURRENCY:-1 16}"
export INSTALL_APT="${INSTALL_APT:-1}" LOADGEN="${LOADGEN:-auto}"
export GATEWAY_PORT="$PORT_BASE" UPSTREAM_PORT="$((PORT_BASE + 1))"
# What is measured: by default a snapshot of the committed HEAD (git archive: read-only), because
# other engineers edit src/ while this runs; MODELYARD_SRC=worktree measures the working tree.
case "${MODELYARD_SRC:-head}" in
  head)
    mkdir -p "$OUT/src-head"
    export MODELYARD_SRC_COMMIT="$(git -C "$REPO" rev-parse --short HEAD)"
    git -C "$REPO" archive "$MODELYARD_SRC_COMMIT" src | tar -x -C "$OUT/src-head"
    export MODELYARD_SRC_DIR="$OUT/src-head/src" ;;
  worktree) export MODELYARD_SRC_DIR="$REPO/src" ;;
  *) echo "MODELYARD_SRC is head or worktree" >&2; exit 2 ;;
esac
log() { printf '[run_core %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
T0=$(date +%s)

# Copies one harness run's outputs ($1 = stderr log of the harness) into $OUT/$2.
collect() {
  local run
  run="$(grep -o 'results: [^ ]*results.md' "$1" | tail -1 | sed 's/^results: //; s#/results.md$##')" || true
  mkdir -p "$OUT/$2"
  if [ -n "$run" ] && [ -d "$run" ]; then
    echo "$run" > "$OUT/$2/harness_run_dir.txt"
    for f in results.json results.md gateway.log upstream.log net-nonloopback.txt net-dns-names.txt modelyard.yaml litellm_config.yaml; do
      [ -f "$run/$f" ] && cp "$run/$f" "$OUT/$2/" || true
    done
  fi
}

# 1. modelyard through the shared harness (GATEWAY_CMD runs benchmarks/modelyard_gateway.sh,
#    which writes the config from the harness's env and execs `python -m modelyard serve`).
log "pass 1/3: modelyard (harness: $SHARED/run_peer_baseline.sh)"
set +e
GATEWAY_NAME=modelyard SKIP_LITELLM_INSTALL=1 NET_CHECK="${MODELYARD_NET_CHECK:-1}" \
  GATEWAY_CMD="$HERE/modelyard_gateway.sh" \
  "$SHARED/run_peer_baseline.sh" > "$OUT/modelyard.stdout" 2> "$OUT/modelyard.stderr"
rc_m=$?
set -e
collect "$OUT/modelyard.stderr" modelyard
log "modelyard pass rc=$rc_m ($(( $(date +%s) - T0 )) s so far)"

# 2. LiteLLM's proxy through the same harness (it installs litellm[proxy]==1.108.7 into
#    $BENCH_ROOT/venv if missing).
rc_l=skipped
if [ "${SKIP_LITELLM:-0}" != 1 ]; then
  log "pass 2/3: LiteLLM proxy"
  set +e
  NET_CHECK="${LITELLM_NET_CHECK:-0}" "$SHARED/run_peer_baseline.sh" > "$OUT/litellm.stdout" 2> "$OUT/litellm.stderr"
  rc_l=$?
  set -e
  collect "$OUT/litellm.stderr" litellm
  log "LiteLLM pass rc=$rc_l ($(( $(date +%s) - T0 )) s so far)"
fi

# 3. modelyard-only extras.
if [ "${SKIP_EXTRAS:-0}" != 1 ]; then
  log "pass 3/3: extras (idle RSS, overhead header, CPU variants, py-spy)"
  set +e
  TOOLS_PY="$BENCH_ROOT/tools-venv/bin/python" python3 "$HERE/extras.py" --out-dir "$OUT/extras" \
    --gateway-port "$((PORT_BASE + 10))" --upstream-port "$((PORT_BASE + 11))" --rounds "${EXTRAS_ROUNDS:-2}" \
    ${NO_PROFILE:+--no-profile} > "$OUT/extras.stdout" 2> "$OUT/extras.stderr"
  rc_e=$?
  set -e
  for p in python native; do
    [ -f "$OUT/extras/profile-$p.txt" ] && python3 "$HERE/profile_summary.py" "$OUT/extras/profile-$p.txt" --top 25 \
      --json "$OUT/extras/profile-$p.summary.json" > "$OUT/extras/profile-$p.summary.md" || true
  done
  log "extras rc=$rc_e"
fi

# Versions (read-only git).
"$REPO/.venv/bin/python" - "$OUT/versions.json" "$BENCH_ROOT" "$REPO" <<'PY'
import importlib.metadata as m, json, os, platform, subprocess, sys
out, root, repo = sys.argv[1], sys.argv[2], sys.argv[3]
def v(p):
    try:
        return m.version(p)
    except m.PackageNotFoundError:
        return "not installed"
def git(*a):
    try:
        return subprocess.run(["git", "-C", repo, *a],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"
ll = subprocess.run([os.path.join(root, "venv/bin/python"), "-c",
                     "import importlib.metadata as m, platform; print(platform.python_version(), *[m.version(p) for p in ('litellm','uvicorn','aiohttp','httpx','fastapi')])"],
                    capture_output=True, text=True).stdout.split()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
d = {
    "modelyard commit": (os.environ["MODELYARD_SRC_COMMIT"] + " (measured: a git-archive snapshot of this commit, HEAD at the start)") if os.environ.get("MODELYARD_SRC_COMMIT") else (git("rev-parse", "--short", "HEAD") + " + working tree" + (" (uncommitted changes under src/)" if git("status", "--porcelain", "--", "src") else "")),
    "modelyard python": platform.python_version(),
    "modelyard deps": "uvicorn %s, aiohttp %s, uvloop %s, httptools %s, orjson %s" % tuple(v(p) for p in ("uvicorn", "aiohttp", "uvloop", "httptools", "orjson")),
    "litellm side": ("python %s, litellm %s, uvicorn %s, aiohttp %s, httpx %s, fastapi %s" % tuple(ll)) if len(ll) == 6 else "n/a",
    "machine": "%d CPUs (nproc), %s, kernel %s" % (os.cpu_count() or 0, cpu, platform.release()),
    "wrk": subprocess.run(["sh", "-c", "wrk -v 2>&1 | head -1"], capture_output=True, text=True).stdout.strip(),
}
json.dump(d, open(out, "w"), indent=1)
PY
echo "{\"modelyard\": \"$rc_m\", \"litellm\": \"$rc_l\", \"wall_s\": $(( $(date +%s) - T0 ))}" > "$OUT/rc.json"
python3 "$HERE/report.py" "$OUT" > /dev/null
[ -z "${OUT_DIR:-}" ] && ln -sfn "$TS" "$HERE/out/latest" 2>/dev/null || true
log "done in $(( $(date +%s) - T0 )) s: $OUT/summary.md"
cat "$OUT/summary.md"
}
main "$@"; exit $?

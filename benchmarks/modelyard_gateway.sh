#!/usr/bin/env bash
# Starts modelyard for the shared harness (/work/shared/bench/run_peer_baseline.sh, GATEWAY_CMD).
# Writes the benchmark config from the harness's env, then execs the server (so the harness's
# PID is the gateway's PID and /proc CPU/RSS readings are modelyard's own).
#
# Env in:  GATEWAY_PORT, UPSTREAM_BASE, GATEWAY_MODEL (default fake), GATEWAY_API_KEY (master key),
#          BENCH_RUN_DIR (where the config is written; default a temp dir),
#          MODELYARD_SRC_DIR (package source dir; default $REPO/src),
#          MODELYARD_LOG_LEVEL (default info, modelyard's own default), MODELYARD_PY (interpreter),
#          MODELYARD_BENCH_GC=1 (experiment, not a modelyard feature: import the server's modules,
#          gc.freeze() them and raise the gen-0 GC threshold to 100000 before running the same CLI).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${MODELYARD_PY:-$REPO/.venv/bin/python}"
DIR="${BENCH_RUN_DIR:-$(mktemp -d)}"
CFG="$DIR/modelyard.yaml"
: "${GATEWAY_PORT:?}" "${UPSTREAM_BASE:?}"
# Secrets are references (env:VAR), never values: the upstream key is a dummy the fake ignores.
export MODELYARD_BENCH_UPSTREAM_KEY="${MODELYARD_BENCH_UPSTREAM_KEY:-dummy-upstream-key}"
{
  echo "embedded_models: false"
  echo "cloud_models_from_env: false"
  echo "server:"
  echo "  host: 127.0.0.1"
  echo "  port: ${GATEWAY_PORT}"
  if [ -n "${GATEWAY_API_KEY:-}" ]; then echo "  master_key: env:GATEWAY_API_KEY"; fi
  echo "models:"
  echo "  - name: ${GATEWAY_MODEL:-fake}"
  echo "    deployments:"
  echo "      - provider: openai"
  echo "        model: ${GATEWAY_MODEL:-fake}"
  echo "        base_url: ${UPSTREAM_BASE}"
  echo "        api_key: env:MODELYARD_BENCH_UPSTREAM_KEY"
} > "$CFG"
# Which modelyard source to run: MODELYARD_SRC_DIR (run_core.sh points it at a `git archive HEAD`
# snapshot, so concurrent edits to the working tree do not change what is measured), else src/.
export PYTHONPATH="${MODELYARD_SRC_DIR:-$REPO/src}${PYTHONPATH:+:$PYTHONPATH}"
ARGS=(serve --config "$CFG" --port "$GATEWAY_PORT" --log-level "${MODELYARD_LOG_LEVEL:-info}")
if [ "${MODELYARD_BENCH_GC:-0}" = 1 ]; then
  exec "$PY" -c '
import gc, sys
import modelyard.cli, modelyard.app, uvicorn, aiohttp, orjson  # the long-lived import-time objects
gc.collect(); gc.freeze(); gc.set_threshold(100_000, 50, 100)
sys.argv = ["modelyard", *sys.argv[1:]]
modelyard.cli.main()
' "${ARGS[@]}"
fi
exec "$PY" -m modelyard "${ARGS[@]}"

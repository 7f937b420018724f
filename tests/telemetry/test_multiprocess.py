"""``modelyard serve --workers 2``: every worker's counts reach GET /metrics, whichever answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from tests.support import CLEARED_ENV, free_port
from tests.telemetry._support import config_text, parse, series

BATCH = 8
MAX_REQUESTS = 400


def post(url: str, body: Mapping[str, object]) -> int:
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code


def test_metrics_sum_across_workers(tmp_path: Path) -> None:
    config = tmp_path / "modelyard.yaml"
    requests_log = tmp_path / "requests.jsonl"
    config.write_text(
        config_text(master_key=False, observability=f"log_format: json\nlog_file: {requests_log}")
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (*CLEARED_ENV, "PROMETHEUS_MULTIPROC_DIR")}
    log = tmp_path / "gateway.log"
    args = [sys.executable, "-m", "modelyard", "serve", "--config", str(config), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*args, "--workers", "2"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        sent = 0
        pids: set[int] = set()
        # New connections until both workers have served some (the JSON log names the process).
        while len(pids) < 2 and sent < MAX_REQUESTS:
            with ThreadPoolExecutor(BATCH) as pool:  # concurrent connections spread over workers
                statuses = list(pool.map(lambda _: post(url, body), range(BATCH)))
            assert statuses == [200] * BATCH
            sent += BATCH
            time.sleep(0.05)
            pids = {orjson.loads(line)["pid"] for line in requests_log.read_text().splitlines()}
        assert len(pids) == 2, f"one worker served all {sent} requests"
        print(f"both workers served after {sent} requests")
        for _ in range(6):  # several scrapes: whichever worker answers, the sums are the same
            with httpx.Client() as client:
                samples = parse(client.get(url + "/metrics", timeout=10).text)
            requests = series(samples, "modelyard_requests_total")
            assert sum(requests.values()) == sent, requests
            attempts = series(samples, "modelyard_attempts_total")
            assert attempts == {frozenset({("deployment", "fake/echo"), ("outcome", "ok")}): sent}
            durations = series(samples, "gen_ai_client_operation_duration_seconds_count")
            assert sum(durations.values()) == sent
            # Live gauges, mirrored by each worker: every deployment is there, nothing in flight.
            in_flight = series(samples, "modelyard_deployment_in_flight")
            assert frozenset({("model", "echo"), ("deployment", "fake/echo")}) in in_flight
            assert set(in_flight.values()) == {0}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

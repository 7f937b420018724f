"""``modelyard top --once`` against a real gateway process after real traffic: every number it
prints matches what the admin API holds.

Traffic: ``echo`` (cloud, $1 a token: 2 tokens in, 3 out → $5 a request) 4 plain + 2 streamed
requests; ``slow`` (a 40 ms local deployment) 3 requests; ``broken`` (always 503, 2 attempts a
request, the breaker opens after 3 failures) 2 requests. (uvloop may wake a 40 ms sleep a
little early, hence the 35 ms floor below.)
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gateway_process

MASTER = "mk-top-master-7d1e"
CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
models:
  - name: echo
    deployments:
      - provider: fake
        model: echo
        max_concurrency: 8
        pricing: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
  - name: slow
    deployments:
      - {{provider: fake, model: slow-40, tags: [local], max_concurrency: 2, hardware: {{usd_per_hour: 36}}}}
  - name: broken
    routing: {{max_attempts: 2, breaker: {{consecutive_failures: 3, base_open_s: 300}}}}
    deployments: [{{provider: fake, model: error-503}}]
"""
EXPECTED_ROWS = 4 + 2 + 3 + 2 * 2


@dataclass
class Gateway:
    url: str
    http: httpx.Client

    def admin(self, path: str, **params: str) -> Any:
        resp = self.http.get(path, params=params, headers={"authorization": f"Bearer {MASTER}"})
        assert resp.status_code == 200, resp.text
        return resp.json()


def chat(http: httpx.Client, model: str, *, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "one two"}]}
    headers = {"authorization": f"Bearer {MASTER}"}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        resp.read()
        return resp.status_code


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("top")
    config = CONFIG.format(db=work / "ledger.db")
    with (
        gateway_process(work, config, env={"MODELYARD_MASTER_KEY": MASTER}) as (url, _log),
        httpx.Client(base_url=url, timeout=20) as http,
    ):
        for _ in range(4):
            assert chat(http, "echo") == 200
        for _ in range(2):
            assert chat(http, "echo", stream=True) == 200
        for _ in range(3):
            assert chat(http, "slow") == 200
        for _ in range(2):
            assert chat(http, "broken") == 503
        gw = Gateway(url, http)
        deadline = time.monotonic() + 10
        while len(gw.admin("/admin/ledger", since="15m", limit="1000")["data"]) < EXPECTED_ROWS:
            assert time.monotonic() < deadline, "the ledger never caught up"
            time.sleep(0.1)
        yield gw


def run_top(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODELYARD_API_KEY", "MODELYARD_URL")}
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "top", "--once", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env | {"COLUMNS": "200"},
    )


def table_rows(output: str, title: str) -> dict[str, list[str]]:
    """The body rows of the table titled ``title``, by first cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def nearest_rank(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]:.1f}"


def expected_model_row(rows: list[dict[str, Any]]) -> list[str]:
    """What the model table should say for these ledger rows (one model's, or all)."""
    requests: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        requests.setdefault(row["request_id"], []).append(row)
    finals = [max(r, key=lambda a: a["attempt"]) for r in requests.values()]
    errors = sum(f["status"] != "ok" for f in finals)
    local = sum(bool(f["local"]) for f in finals)
    latencies = [sum(a["latency_ms"] for a in r) for r in requests.values()]
    ttfts = [a["ttft_ms"] for a in rows if a["ttft_ms"] is not None]
    cost = sum(Decimal(a["cost_usd"]) for a in rows)
    n = len(requests)
    return [
        str(n),
        f"{100 * errors / n:.1f}%",
        nearest_rank(latencies, 50),
        nearest_rank(latencies, 95),
        nearest_rank(ttfts, 50),
        nearest_rank(ttfts, 95),
        str(sum(a["tokens_in"] for a in rows)),
        str(sum(a["tokens_out"] for a in rows)),
        f"{cost:.6f}",
        f"{100 * local / n:.0f}%",
    ]


def test_top_once_prints_what_the_gateway_holds(gateway: Gateway) -> None:
    result = run_top(gateway.url, "--key", MASTER)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    ledger = gateway.admin("/admin/ledger", since="15m", limit="1000")["data"]
    state = gateway.admin("/admin/deployments")

    models = table_rows(out, "models (last 15m)")
    assert set(models) == {"echo", "slow", "broken", "total"}
    for model in ("echo", "slow", "broken"):
        assert models[model] == expected_model_row([r for r in ledger if r["model_requested"] == model]), (
            model
        )
    assert models["total"] == expected_model_row(ledger)
    # The arithmetic, spelt out for the cheap cases.
    assert models["echo"][0:2] == ["6", "0.0%"] and models["echo"][6:10] == ["12", "18", "30.000000", "0%"]
    assert models["echo"][4] != "-"  # the two streamed answers have a time to first token
    assert models["slow"][0] == "3" and models["slow"][9] == "100%" and float(models["slow"][2]) >= 35
    assert models["broken"][0:2] == ["2", "100.0%"] and models["broken"][6:9] == ["0", "0", "0.000000"]
    assert "last 15m: 11 requests, 18.2% errors" in out

    deployments = table_rows(out, "deployments (now)")
    for group in state["models"]:
        for dep in group["deployments"]:
            row = deployments[group["model"]]
            limit = dep["max_concurrency"]
            assert row[0] == dep["deployment"]
            assert row[1] == ("local" if dep["local"] else "cloud")
            assert row[2] == f"{dep['in_flight']}/{limit if limit is not None else '∞'}"
            assert row[3] == str(dep["queued"])
            ewma = dep["ewma_latency_ms"]
            assert row[4] == ("-" if ewma is None else f"{ewma:.1f}")
            assert row[5].split()[0] == dep["breaker"]
            assert row[6:8] == [str(dep["served"]), str(dep["failures"])]
    assert deployments["echo"][5] == "closed" and deployments["broken"][5].startswith("open")
    assert deployments["echo"][6] == "6" and deployments["slow"][6] == "3"
    assert deployments["slow"][8] == "36.00" and deployments["echo"][8] == "-"


def test_a_viewer_key_is_enough(gateway: Gateway) -> None:
    created = gateway.http.post(
        "/admin/keys", json={"role": "viewer"}, headers={"authorization": f"Bearer {MASTER}"}
    ).json()
    result = run_top(gateway.url, "--key", created["key"])
    assert result.returncode == 0, result.stderr
    assert "models (last 15m)" in result.stdout


def test_missing_wrong_and_too_weak_keys_say_which_key_is_needed(gateway: Gateway) -> None:
    holder = gateway.http.post(
        "/admin/keys", json={"role": "key-holder"}, headers={"authorization": f"Bearer {MASTER}"}
    ).json()["key"]
    for args, first in (
        ((), "401 from /admin/deployments: no key was given"),
        (("--key", MASTER + "x"), "401 from /admin/deployments: the gateway refused this key"),
        (("--key", holder), "403 from /admin/deployments: this route needs role admin or viewer"),
    ):
        result = run_top(gateway.url, *args)
        assert result.returncode == 1
        assert result.stderr.startswith(first), result.stderr
        assert "needs an admin or viewer key" in result.stderr and "--role viewer" in result.stderr
        assert result.stdout == ""


def test_gateway_down_is_a_clear_message(tmp_path: Path) -> None:
    result = run_top("http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr
    assert "is `modelyard serve` running?" in result.stderr


def test_top_is_a_registered_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "top", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for option in ("--url", "--key", "--once", "--interval", "--since"):
        assert option in result.stdout

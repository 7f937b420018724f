"""Budget leases through a real gateway: ``kill -9`` with requests in flight, then a restart.

``storage.reservations: leased`` (README, "Budget leases"): the killed process's journal is replayed
on the next start, so the finished requests keep their real rows and cost, the ones cut off are
charged their reserved maximum, and nothing stays reserved. The official OpenAI SDK is the client.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import gateway_process, gateway_subprocess

MASTER = "mk-lease-master-7d1e"
CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}", reservations: leased, lease_max_age_s: 0.5}}
models:
  - name: echo
    deployments:
      - {{provider: fake, model: echo, pricing: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}}}
  - name: slow
    deployments:
      - {{provider: fake, model: slow-30000, pricing: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}}}
"""


def admin(url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method, url + path, headers={"authorization": f"Bearer {MASTER}"}, timeout=20, **kwargs
    )  # type: ignore[arg-type]


def test_kill9_with_requests_in_flight_is_settled_from_the_journal(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    config = CONFIG.format(db=db)
    env = {"MODELYARD_MASTER_KEY": MASTER}
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    with gateway_subprocess(tmp_path / "run1", config, env=env) as (proc, url, _):
        created = admin(
            url, "POST", "/admin/keys", json={"budgets": [{"period": "total", "limit_usd": 10_000}]}
        )
        key, key_id = created.json()["key"], created.json()["id"]
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        for _ in range(5):  # "one two" → 2 prompt + 3 answer tokens: $5 each
            reply = client.chat.completions.create(
                model="echo", max_tokens=4, messages=[{"role": "user", "content": "one two"}]
            )
            assert reply.choices[0].message.content == "echo: one two"

        def cut_off() -> None:
            with pytest.raises(openai.APIConnectionError):
                client.chat.completions.create(
                    model="slow", max_tokens=4, messages=[{"role": "user", "content": "one two"}]
                )

        threads = [threading.Thread(target=cut_off) for _ in range(8)]
        for thread in threads:
            thread.start()
        journal = Path(f"{db}.leases")
        deadline = time.monotonic() + 10
        while journal_admissions(journal) < 13 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert journal_admissions(journal) == 13  # 5 finished + 8 waiting on the upstream
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for thread in threads:
            thread.join(10)

    with sqlite3.connect(db) as conn:
        pending = conn.execute(
            "SELECT COUNT(*), SUM(max_cost_nano) FROM reservations WHERE status = 'pending'"
        )
        count, leased = pending.fetchone()
    assert count >= 1 and leased > 0  # the killed process's leases, still reserved

    with gateway_process(tmp_path / "run2", config, env=env) as (url, log):
        assert "from its lease journal" in log.read_text()
        rows = admin(url, "GET", "/admin/ledger", params={"limit": 100}).json()["data"]
        budget = admin(url, "GET", "/admin/budgets", params={"scope": "key", "scope_id": key_id}).json()[
            "data"
        ][0]
    ok = [r for r in rows if r["status"] == "ok"]
    recovered = [r for r in rows if r["status"] == "recovered"]
    assert len(ok) == 5 and {r["cost_usd"] for r in ok} == {"5"}
    assert len(recovered) == 8 and len({r["cost_usd"] for r in recovered}) == 1  # each at its maximum
    maximum = float(recovered[0]["cost_usd"])
    assert maximum > 5
    assert float(budget["spend_usd"]) == 5 * 5 + 8 * maximum  # finished: actual; cut off: reserved
    assert budget["reserved_usd"] == "0"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reservations WHERE status = 'pending'").fetchone() == (0,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def journal_admissions(journal: Path) -> int:
    if not journal.is_dir():
        return 0
    return sum(p.read_bytes().count(b'"k":"R"') for p in journal.glob("*.jnl"))

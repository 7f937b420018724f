"""A gateway config with priced fake models, and a scripted mix of real traffic through it —
shared by the dashboard browser tests and ``scripts/screenshots.py``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

MASTER = "mk-dashboard-3f2e1d0c9b"
XSS = "<script>alert(1)</script>"
CONFIG = """\
server: {{master_key: env:MODELYARD_MASTER_KEY}}
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
models:
  - name: gpt-4o-mini
    deployments:
      - {{provider: fake, model: echo, pricing: {{input_per_mtok: "0.15", output_per_mtok: "0.60"}}}}
  - name: claude-haiku
    deployments:
      - provider: fake
        model: slow-40
        protocol: anthropic
        pricing: {{input_per_mtok: 1, output_per_mtok: 5}}
  - name: local-small
    deployments:
      - {{provider: fake, model: slow-5, tags: [local], hardware: {{usd_per_hour: "0.50"}}}}
  - name: flaky
    routing: {{max_attempts: 2, fallbacks: [gpt-4o-mini], breaker: {{consecutive_failures: 1000}}}}
    deployments:
      - {{provider: fake, model: error-503, pricing: {{input_per_mtok: 2, output_per_mtok: 8}}}}
"""


@dataclass
class Traffic:
    """What was sent: the keys made, and the id of the request carrying the script prompt."""

    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    """name → (key, key id)."""
    xss_request_id: str = ""
    requests: int = 0


def config_text(db: Path) -> str:
    return CONFIG.format(db=db)


def serve_traffic(url: str, rounds: int = 6) -> Traffic:
    """Make keys and budgets, then send a mix: plain and streamed chats to cloud and local models,
    a failing model that falls back, an Anthropic-dialect call, and a captured script prompt."""
    out = Traffic()
    admin = {"authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, body in (
            ("research", {"team_id": "research", "tags": ["prod", "search"], "store_prompts": True}),
            ("support", {"team_id": "support", "tags": ["prod"]}),
            ("batch", {"team_id": "research", "tags": ["batch"]}),
            ("viewer", {"role": "viewer"}),
        ):
            r = client.post("/admin/keys", json={"name": name, **body}, headers=admin)
            r.raise_for_status()
            out.keys[name] = (r.json()["key"], r.json()["id"])
        for scope, scope_id, limit in (
            ("key", out.keys["research"][1], "5"),
            ("team", "support", "2"),
            ("team", "research", "10"),
        ):
            client.put(
                "/admin/budgets",
                json={"scope": scope, "scope_id": scope_id, "period": "monthly", "limit_usd": limit},
                headers=admin,
            ).raise_for_status()

        def chat(key: str, model: str, text: str, *, stream: bool = False) -> httpx.Response:
            body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
            out.requests += 1
            return client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})

        research, support, batch = (out.keys[n][0] for n in ("research", "support", "batch"))
        for i in range(rounds):
            chat(research, "gpt-4o-mini", f"summarise document {i} " + "lorem ipsum " * (i + 3))
            chat(support, "gpt-4o-mini", f"customer ticket {i}: my order is late", stream=True)
            chat(batch, "local-small", f"classify item {i}")
            chat(research, "claude-haiku", f"translate sentence {i} into French", stream=i % 2 == 0)
            if i % 3 == 0:
                chat(support, "flaky", f"flaky call {i}")
            out.requests += 1
            client.post(
                "/v1/messages",
                json={
                    "model": "claude-haiku",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"hi {i}"}],
                },
                headers={"x-api-key": batch, "anthropic-version": "2023-06-01"},
            )
        out.xss_request_id = chat(research, "gpt-4o-mini", f"please render {XSS} safely").headers[
            "x-request-id"
        ]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the request log and the ledger are written in batches
            logged = client.get("/admin/requests", params={"limit": "1000"}, headers=admin).json()["data"]
            ledger = client.get("/admin/ledger", params={"limit": "10000"}, headers=admin).json()["data"]
            if len(logged) >= out.requests and len({r["request_id"] for r in ledger}) >= out.requests:
                break
            time.sleep(0.1)
    return out

"""The metric catalog the dashboard and alert checks use (tests/deploy/promql.py) is what a real
gateway exports: same series names, same labels. If the exporter changes, this fails first."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy._support import promtool
from tests.deploy.promql import SERIES, TARGET_LABELS, exported_base
from tests.support import gateway_process

MASTER = "mk-deploy-catalog-31c"
CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
observability: {{budget_refresh_s: 0.1}}
models:
  - name: echo
    routing: {{fallbacks: [other]}}
    deployments:
      - {{provider: fake, model: echo, pricing: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  - name: flaky
    routing: {{max_attempts: 3, fallbacks: [echo]}}
    deployments: [{{provider: fake, model: error-503}}, {{provider: fake, model: error-502}}]
  - name: other
    deployments: [{{provider: fake, model: echo, tags: [local]}}]
"""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("catalog")
    auth = {"authorization": f"Bearer {MASTER}"}
    with (
        gateway_process(work, CONFIG.format(db=work / "l.db"), env={"MODELYARD_MASTER_KEY": MASTER}) as (
            url,
            _,
        ),
        httpx.Client(base_url=url, timeout=20, headers=auth) as http,
    ):
        key = http.post(
            "/admin/keys", json={"team_id": "t1", "budgets": [{"period": "daily", "limit_usd": 5}]}
        )
        key_auth = {"authorization": f"Bearer {key.json()['key']}"}
        for model, stream in (("echo", False), ("echo", True), ("flaky", False), ("other", True)):
            body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "a b c"}]}
            with http.stream("POST", "/v1/chat/completions", json=body, headers=key_auth) as resp:
                resp.read()
        http.post("/v1/messages", json={"model": "nope", "max_tokens": 5, "messages": []})
        text = ""
        for _ in range(50):
            text = http.get("/metrics").text
            if "modelyard_budget_remaining_usd{" in text:
                break
            time.sleep(0.1)
        yield text


def test_every_exported_series_is_in_the_catalog_with_its_labels(exposition: str) -> None:
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.startswith(("modelyard_", "gen_ai_")) or sample.name.endswith("_created"):
                continue
            seen.setdefault(sample.name, set()).update(sample.labels)
    assert seen, "no modelyard metrics scraped"
    mismatched = {
        name: (sorted(labels), sorted(SERIES.get(name, frozenset()) - TARGET_LABELS))
        for name, labels in seen.items()
        if labels != SERIES.get(name, frozenset()) - TARGET_LABELS
    }
    assert mismatched == {}
    # Everything but the response cache (no cache configured) and smart routes (no request asks for
    # a route) shows up after this traffic.
    missing = {exported_base(n) for n in SERIES if n not in seen and n != "up"}
    assert missing <= {
        "modelyard_cache_requests_total",
        "modelyard_cache_lookup_seconds",
        "modelyard_smart_route_decisions_total",
    }, missing


def test_promtool_lints_the_exposition(exposition: str) -> None:
    result = promtool("check", "metrics", stdin=exposition)
    assert result.returncode == 0, result.stdout + result.stderr

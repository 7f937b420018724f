"""Rate-limit leases through real gateways: two ``modelyard serve`` processes share one SQLite ledger
and one Redis with ``storage.reservations: leased`` (README, "Budget leases"), and a key's RPM limit
holds exactly across them. The official OpenAI SDK is the client; a refusal is the SDK's
``RateLimitError`` with a ``Retry-After`` header.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.ratelimit.conftest import HOW_TO_RUN, REDIS_URL_ENV
from tests.support import gateway_subprocess

MASTER = "mk-rl-lease-master-51ab"
CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}", reservations: leased, lease_max_age_s: 0.5}}
rate_limits: {{backend: redis, redis_url: "env:MODELYARD_REDIS_URL"}}
models:
  - name: echo
    deployments:
      - {{provider: fake, model: echo, pricing: {{input_per_mtok: 1, output_per_mtok: 1}}}}
"""
RPM = 80


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        pytest.skip(f"needs Redis: {REDIS_URL_ENV} is not set; {HOW_TO_RUN}")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis: unreachable ({exc}); {HOW_TO_RUN}")
    return url


def test_an_rpm_limit_holds_exactly_across_two_leasing_gateways(tmp_path: Path, redis_url: str) -> None:
    """RPM 80 on one key, requests alternating between two gateways: exactly 80 are served, every
    other one is refused with 429 and Retry-After; capacity a gateway's lease held unused comes back
    when the lease ends (the second round, after 1 s, takes what was left)."""
    config = CONFIG.format(db=tmp_path / "ledger.db")
    env = {"MODELYARD_MASTER_KEY": MASTER, "MODELYARD_REDIS_URL": redis_url}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        gateway_subprocess(tmp_path / "one", config, env=env) as (_, url_one, log_one),
        gateway_subprocess(tmp_path / "two", config, env=env) as (_, url_two, log_two),
    ):
        created = httpx.post(
            url_one + "/admin/keys",
            headers={"authorization": f"Bearer {MASTER}"},
            json={"rpm": RPM, "models": ["echo"]},
            timeout=20,
        ).json()
        clients = [
            openai.OpenAI(base_url=url + "/v1", api_key=created["key"], max_retries=0, timeout=30)
            for url in (url_one, url_two)
        ]
        served = refused = 0

        def round_of(n: int) -> None:
            nonlocal served, refused
            for i in range(n):
                try:
                    clients[i % 2].chat.completions.create(
                        model="echo", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
                    )
                    served += 1
                except openai.RateLimitError as exc:
                    assert exc.status_code == 429
                    assert int(exc.response.headers["retry-after"]) >= 1
                    assert f"RPM limit of {RPM}" in str(exc)
                    refused += 1

        round_of(1)
        # Gateway one leased 4 requests' worth (the first lease's size), not 1: it admits from it.
        counter = f"modelyard:rl:rpm:key:{created['id']}:h"
        assert redis.Redis.from_url(redis_url).hget(counter, "n") == b"4"
        round_of(99)
        time.sleep(1.0)  # every lease has ended and given back what it did not use
        round_of(20)
        assert served == RPM, (served, refused)
        assert refused == 120 - RPM
        for log in (log_one, log_two):
            assert created["key"] not in log.read_text()
        # Both kinds of lease are counted in each gateway's metrics.
        for url in (url_one, url_two):
            text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}, timeout=10).text
            taken = {
                kind: float(line.rsplit(" ", 1)[1])
                for kind in ("budget", "rate_limit")
                for line in text.splitlines()
                if line.startswith(f'modelyard_leases_total{{kind="{kind}"}}')
            }
            assert taken.get("budget", 0) >= 1 and taken.get("rate_limit", 0) >= 1, taken
            assert 'modelyard_lease_waits_total{kind="rate_limit"}' in text

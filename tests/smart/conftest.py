"""Smart-routing fixtures: a gateway with routes in front of the fake cloud upstreams and a
"local" model (modelyard's fake provider tagged ``local``), and store backends (SQLite, and
PostgreSQL when MODELYARD_TEST_POSTGRES_DSN is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import ENVIRON, MASTER_KEY
from tests.store._support import PG_ENV, PG_HOWTO, Backend, run_sync

# Cloud models priced as their vendors do; the local one costs nothing (hardware: $0/h), so it is
# the cheapest candidate. ``mixed`` has a cloud deployment first and a local one behind it.
SMART_CONFIG = """\
server:
  master_key: env:TEST_MASTER_KEY
  request_timeout_s: 10
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
request_log: {{enabled: true}}
models:
  - name: local-small
    deployments:
      - {{provider: fake, model: echo, tags: [local], hardware: {{usd_per_hour: 0}}}}
  - name: cloud-mini
    routing: {{max_attempts: 2, fallbacks: [cloud-big]}}
    deployments:
      - provider: openai
        model: rec-text
        base_url: {openai}
        api_key: env:TEST_OPENAI_KEY
        pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
  - name: cloud-big
    deployments:
      - provider: anthropic
        model: rec-text
        base_url: {anthropic}
        api_key: env:TEST_ANTHROPIC_KEY
        pricing: {{input_per_mtok: 3, output_per_mtok: 15}}
  - name: mixed
    routing: {{strategy: priority, fallbacks: [cloud-big]}}
    deployments:
      - provider: openai
        model: rec-text
        base_url: {openai}
        api_key: env:TEST_OPENAI_KEY
        pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
      - {{provider: fake, model: echo, priority: 1, tags: [local], hardware: {{usd_per_hour: 0}}}}
routes:
  auto:
    candidates: [local-small, cloud-mini, cloud-big]
    quality_target: 0.8
    quality: {{local-small: 0.6, cloud-mini: 0.85, cloud-big: 0.95}}
    bandit: {{exploration: 0}}
    rules:
      - {{name: personal-data, when: {{pii: [email, phone, card, iban, ssn]}}, action: local_only}}
      - {{name: confidential, when: {{tags: [confidential]}}, action: local_only}}
  cloudy:
    candidates: [cloud-mini, cloud-big]
    rules:
      - {{name: personal-data, when: {{pii: [email, phone, card, iban, ssn]}}, action: local_only}}
  mixy:
    candidates: [mixed, cloud-big]
    quality: {{mixed: 0.9, cloud-big: 0.95}}
    bandit: {{exploration: 0}}
    rules:
      - {{name: personal-data, when: {{pii: [email, phone, card, iban, ssn]}}, action: local_only}}
      - {{name: confidential, when: {{tags: [confidential]}}, action: local_only}}
"""


def smart_config(db: Path, openai: FakeUpstream, anthropic: FakeUpstream) -> str:
    return SMART_CONFIG.format(db=db, openai=openai.base_url, anthropic=anthropic.base_url)


@pytest.fixture(scope="module")
def smart_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[GatewayServer]:
    db = tmp_path_factory.mktemp("smart") / "modelyard.db"
    server = GatewayServer(smart_config(db, fake_openai, fake_anthropic), ENVIRON).start()
    yield server
    server.stop()


@pytest.fixture
def start_gateway(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[Callable[[Path], GatewayServer]]:
    """Start gateways on a given SQLite file (stopped at the end of the test)."""
    started: list[GatewayServer] = []

    def start(db: Path) -> GatewayServer:
        server = GatewayServer(smart_config(db, fake_openai, fake_anthropic), ENVIRON).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "modelyard.db"))
        return
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.skip(PG_HOWTO)
    schema = f"modelyard_smart_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    try:
        yield Backend("postgres", dsn, schema)
    finally:
        import asyncpg

        async def drop() -> None:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        run_sync(drop)

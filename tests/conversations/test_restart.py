"""Conversations and stored responses survive a gateway restart: a real ``modelyard serve``
process is stopped and started again on the same SQLite file, or the same PostgreSQL database
(a throw-away one, when MODELYARD_TEST_POSTGRES_DSN is set)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conversations.conftest import ENVIRON, MASTER, MASTER_H, gateway_yaml
from tests.store._support import throwaway_postgres_database
from tests.support import gateway_process


def _pg_database() -> Iterator[str]:
    return throwaway_postgres_database("modelyard_conv")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gw.db'}"
        return
    databases = _pg_database()
    yield next(databases)
    next(databases, None)


def test_conversations_survive_a_restart(database: str, tmp_path: Path) -> None:
    config = gateway_yaml("env:DB")
    env = {**ENVIRON, "DB": database}
    cid = "restart-" + uuid.uuid4().hex
    with gateway_process(tmp_path, config, env=env, ready_timeout=60) as (url, _log):
        client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0, timeout=20)
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "before"}],
            extra_body={"conversation_id": cid},
        )
        first = client.responses.create(model="echo", input="remember me")
    with gateway_process(tmp_path, config, env=env, ready_timeout=60) as (url, _log):
        client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0, timeout=20)
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "after"}], extra_body={"conversation_id": cid}
        )
        stored = httpx.get(f"{url}/admin/conversations/{cid}", headers=MASTER_H, timeout=10).json()
        assert stored["turns"] == 2
        assert [m["content"] for m in stored["messages"]] == [
            "before",
            "echo: before",
            "after",
            "echo: after",
        ]
        assert client.responses.retrieve(first.id).output_text == "echo: remember me"
        follow = client.responses.create(
            model="echo",
            previous_response_id=first.id,
            input=[{"role": "assistant", "content": "noted"}],
        )
        # The echo model answers the last user text: it can only be the one from before the restart.
        assert follow.output_text == "echo: remember me"

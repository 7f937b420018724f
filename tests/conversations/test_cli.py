"""``modelyard conversations list|show|delete|purge`` against a running gateway (typer's runner,
real HTTP to the module's in-process gateway)."""

from __future__ import annotations

import uuid

import openai
from typer.testing import CliRunner

from modelyard.conversations.cli import conversations_app
from tests.conversations.conftest import MASTER
from tests.fakes import GatewayServer


def test_list_show_delete_purge(gw: GatewayServer, oa: openai.OpenAI) -> None:
    cid = "cli-" + uuid.uuid4().hex
    oa.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello cli"}], extra_body={"conversation_id": cid}
    )
    runner = CliRunner(env={"COLUMNS": "250"})
    common = ["--url", gw.url, "--key", MASTER]
    listed = runner.invoke(conversations_app, ["list", *common, "--limit", "1000"])
    assert listed.exit_code == 0 and cid in listed.output
    shown = runner.invoke(conversations_app, ["show", cid, *common])
    assert shown.exit_code == 0 and "hello cli" in shown.output and "echo: hello cli" in shown.output
    deleted = runner.invoke(conversations_app, ["delete", cid, *common])
    assert deleted.exit_code == 0 and f"deleted {cid}" in deleted.output
    missing = runner.invoke(conversations_app, ["show", cid, *common])
    assert missing.exit_code == 1 and "404" in missing.output
    purged = runner.invoke(conversations_app, ["purge", *common, "--older-than-days", "365"])
    assert purged.exit_code == 0 and "purged" in purged.output

"""The gateway as users run it (``python -m modelyard serve --config``, uvloop and httptools) in
front of the fake upstreams; its whole log output must hold no secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes import FakeUpstream, recording
from tests.fakes.bodies import QUESTION, TEXT_ANSWER
from tests.fakes.config import ENVIRON, MASTER_KEY, SECRETS, gateway_config
from tests.support import gateway_process

MESSAGES: Any = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[tuple[str, Path]]:
    config = gateway_config(fake_openai.base_url, fake_anthropic.base_url)
    with gateway_process(tmp_path_factory.mktemp("served"), config, env=ENVIRON, ready_timeout=30) as running:
        yield running


def test_served_process_relays_and_translates(served: tuple[str, Path]) -> None:
    url, _ = served
    with openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="oa-rec-text", messages=MESSAGES)
        assert raw.http_response.content == recording("openai", "rec-text.json")
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="an-rec-text", messages=MESSAGES, stream=True)
            if c.choices
        )
        assert text == TEXT_ANSWER
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="oa-badkey", messages=MESSAGES)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="oa-drop-mid", messages=MESSAGES, stream=True))
    with anthropic.Anthropic(base_url=url, api_key=MASTER_KEY, max_retries=0) as an_client:
        with an_client.messages.stream(model="oa-rec-text", max_tokens=64, messages=MESSAGES) as stream:
            assert stream.get_final_message().content[0].text == TEXT_ANSWER  # type: ignore[union-attr]
        with pytest.raises(anthropic.InternalServerError):
            an_client.messages.create(model="an-badkey", max_tokens=64, messages=MESSAGES)
        with pytest.raises(anthropic.AuthenticationError):
            an_client.with_options(api_key="wrong").messages.create(
                model="an-rec-text", max_tokens=64, messages=MESSAGES
            )


def test_served_process_log_holds_no_secret(served: tuple[str, Path]) -> None:
    url, log = served
    with openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        for model in ("oa-badkey", "an-badkey", "oa-err-500", "an-err-401"):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model=model, messages=MESSAGES)
    text = log.read_text()
    assert "POST /v1/chat/completions" in text, "the access log was written"
    assert "Traceback" not in text
    for secret in SECRETS:
        assert secret not in text

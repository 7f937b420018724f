"""Gateway-wide data rules (top-level ``rules:``): they hold for requests naming a model directly,
not only for requests naming a route. Checked at the fake cloud upstreams (nothing restricted
arrives there) and in each API's error shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from modelyard.config.load import ConfigError, load_config
from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import ENVIRON, MASTER_KEY
from tests.smart.conftest import SMART_CONFIG

RULES = """\
rules:
  - {name: personal-data, when: {pii: [email, phone, card, iban, ssn]}, action: local_only}
  - {name: confidential, when: {tags: [confidential]}, action: local_only}
  - {name: legal-hold, when: {tags: [legal-hold]}, action: block}
  - {name: eu-only, when: {tags: [eu]}, action: restrict, models: [cloud-big, local-small]}
"""


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[GatewayServer]:
    db = tmp_path_factory.mktemp("rules") / "modelyard.db"
    text = SMART_CONFIG.format(db=db, openai=fake_openai.base_url, anthropic=fake_anthropic.base_url)
    server = GatewayServer(text + RULES, ENVIRON).start()
    yield server
    server.stop()


@pytest.fixture
def clouds(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> tuple[FakeUpstream, FakeUpstream]:
    fake_openai.clear()
    fake_anthropic.clear()
    return fake_openai, fake_anthropic


def _openai(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def _anthropic(gateway: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0)


def test_personal_data_to_a_cloud_only_model_is_refused_and_never_sent(
    gateway: GatewayServer, clouds: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _openai(gateway).chat.completions.create(
            model="cloud-mini",
            messages=[{"role": "user", "content": "mail the report to jane.doe@example.org"}],
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "routing_rule"
    assert "personal-data(email)" in error["message"] and "cloud-mini" in error["message"]
    assert clouds[0].requests == [] and clouds[1].requests == []


def test_personal_data_to_a_mixed_model_is_served_by_its_local_deployment(
    gateway: GatewayServer, clouds: tuple[FakeUpstream, FakeUpstream]
) -> None:
    # `mixed` prefers its cloud deployment and falls back to cloud-big: both are skipped.
    raw = _openai(gateway).chat.completions.with_raw_response.create(
        model="mixed",
        messages=[{"role": "user", "content": "my card is 4111 1111 1111 1111, what is due?"}],
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-modelyard-deployment"] == "fake/echo"  # the local deployment
    assert clouds[0].requests == [] and clouds[1].requests == []


def test_a_confidential_tag_is_refused_in_the_anthropic_shape(
    gateway: GatewayServer, clouds: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        _anthropic(gateway).messages.create(
            model="cloud-big",
            max_tokens=20,
            messages=[{"role": "user", "content": "summarise the merger memo"}],
            extra_headers={"x-modelyard-tags": "confidential"},
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "permission_error"
    assert "confidential" in body["error"]["message"]
    assert clouds[1].requests == []


def test_block_and_restrict_rules(gateway: GatewayServer, clouds: tuple[FakeUpstream, FakeUpstream]) -> None:
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {MASTER_KEY}"}) as http:
        body = {"model": "local-small", "messages": [{"role": "user", "content": "hi"}]}
        blocked = http.post("/v1/chat/completions", json=body, headers={"x-modelyard-tags": "legal-hold"})
        assert blocked.status_code == 403
        assert "legal-hold" in blocked.json()["error"]["message"]
        restricted = http.post(
            "/v1/chat/completions", json={**body, "model": "cloud-mini"}, headers={"x-modelyard-tags": "eu"}
        )
        assert restricted.status_code == 403
        assert "cloud-big" in restricted.json()["error"]["message"]
        allowed = http.post("/v1/chat/completions", json=body, headers={"x-modelyard-tags": "eu"})
        assert allowed.status_code == 200
    assert clouds[0].requests == [] and clouds[1].requests == []


def test_unrestricted_requests_reach_the_cloud_as_before(
    gateway: GatewayServer, clouds: tuple[FakeUpstream, FakeUpstream]
) -> None:
    answer = _openai(gateway).chat.completions.create(
        model="cloud-mini", messages=[{"role": "user", "content": "what is the capital of France?"}]
    )
    assert answer.choices[0].message.content is not None
    assert len(clouds[0].requests) == 1


def test_gateway_rules_also_hold_inside_routes(
    gateway: GatewayServer, clouds: tuple[FakeUpstream, FakeUpstream]
) -> None:
    # `cloudy` has only cloud candidates and only a personal-data rule of its own: the top-level
    # confidential rule still applies to it.
    with pytest.raises(openai.PermissionDeniedError):
        _openai(gateway).chat.completions.create(
            model="cloudy",
            messages=[{"role": "user", "content": "quarterly numbers"}],
            extra_headers={"x-modelyard-tags": "confidential"},
        )
    assert clouds[0].requests == [] and clouds[1].requests == []


def test_a_rule_naming_an_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    text = SMART_CONFIG.format(
        db=tmp_path / "m.db", openai="http://127.0.0.1:9", anthropic="http://127.0.0.1:9"
    )
    bad = text + "rules:\n  - {when: {tags: [eu]}, action: restrict, models: [gpt-nine]}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(bad, source="modelyard.yaml", environ=ENVIRON)
    assert "rule model 'gpt-nine' is not a served model" in str(caught.value)
    assert "modelyard.yaml:" in str(caught.value)

"""``model: "auto"`` with the real embedded models, as users run it: ``modelyard serve`` with the
embedded SmolLM2 and MiniLM plus a (fake) cloud model. Extraction requests and requests carrying
personal data are answered by the real local model; a general question goes to the cloud model;
the fake cloud upstream sees only that one."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes import FakeUpstream
from tests.fakes.config import MASTER_KEY, OPENAI_KEY
from tests.support import gateway_process

pytestmark = pytest.mark.localmodel

CONFIG = """\
server: {{master_key: env:TEST_MASTER_KEY}}
cloud_models_from_env: false
models:
  - name: cloud-mini
    deployments:
      - {{provider: openai, model: rec-text, base_url: "{openai}", api_key: env:TEST_OPENAI_KEY,
          pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
routes:
  auto:
    candidates: [local, cloud-mini]
    tasks: {{extraction: {{model: local}}, classification: {{model: local}}}}
    rules: [{{name: personal-data, when: {{pii: [email, phone, card, iban, ssn]}}, action: local_only}}]
    bandit: {{exploration: 0}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream) -> Iterator[str]:
    env = {"TEST_MASTER_KEY": MASTER_KEY, "TEST_OPENAI_KEY": OPENAI_KEY}
    config = CONFIG.format(openai=fake_openai.base_url)
    with gateway_process(tmp_path_factory.mktemp("smart-local"), config, env=env) as (url, log):
        yield url
    assert "Traceback" not in log.read_text()


def test_auto_uses_the_real_local_model_for_extraction_and_personal_data(
    gateway: str, fake_openai: FakeUpstream
) -> None:
    fake_openai.clear()
    with openai.OpenAI(base_url=gateway + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120) as client:

        def ask(text: str) -> tuple[str, str, str]:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", max_tokens=12, temperature=0, messages=[{"role": "user", "content": text}]
            )
            answer = raw.parse().choices[0].message.content or ""
            return raw.headers["x-modelyard-decision"], raw.headers["x-modelyard-deployment"], answer

        decision, deployment, answer = ask(
            "Extract the invoice number and the total from: Invoice 4471, total $88."
        )
        assert decision.startswith("auto -> local; reason=task:extraction")
        assert deployment.startswith("llamacpp/") and answer
        decision, deployment, answer = ask("My card is 4111 1111 1111 1111; is that a Visa?")
        assert "+rule:personal-data" in decision and deployment.startswith("llamacpp/") and answer
        assert fake_openai.requests == []  # neither reached the cloud
        decision, deployment, _ = ask("What is the capital of France?")
        assert decision.startswith("auto -> cloud-mini") and deployment == "openai/rec-text"
        assert len(fake_openai.requests) == 1

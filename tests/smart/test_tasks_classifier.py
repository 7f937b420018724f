"""The task router over the real embedded MiniLM: held-out prompts land on the right built-in task,
confidence is calibrated on the examples, an off-topic prompt is unsure; in the gateway a sure
task pins its model and the decision header says so."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from modelyard.providers.embeddings import OnnxEmbeddingProvider
from modelyard.routing.smart.tasks import BUILTIN_EXAMPLES, TEMPERATURES, TaskClassifier
from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import ENVIRON
from tests.smart.conftest import AUTH

HELD_OUT = {
    "Extract all the email addresses from the following text and list them": "extraction",
    "Pull the invoice number and total out of this receipt": "extraction",
    "Write a function in C that reverses a string in place": "code",
    "What is 17 times 23? Show your working": "math",
    "Translate 'good morning, how did you sleep?' into German": "translation",
    "Summarize the following paragraph in two sentences": "summarisation",
    "Give me the key points of this report": "summarisation",
    "Is this customer review positive or negative? 'Terrible service.'": "classification",
    "hey, what's up? how was your weekend": "chat",
    "A rectangle is 7 cm by 12 cm. What is its area and perimeter?": "math",
}


def encode(texts: list[str]) -> np.ndarray:
    async def run() -> np.ndarray:
        provider = OnnxEmbeddingProvider()
        try:
            return np.asarray(await provider.encode(texts))
        finally:
            await provider.aclose()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def classifier() -> TaskClassifier:
    texts = [t for examples in BUILTIN_EXAMPLES.values() for t in examples]
    return TaskClassifier.build(BUILTIN_EXAMPLES, encode(texts))


def test_held_out_prompts_land_on_their_task(classifier: TaskClassifier) -> None:
    vectors = encode(list(HELD_OUT))
    guesses = [classifier.classify(v) for v in vectors]
    right = [g.task == task for g, task in zip(guesses, HELD_OUT.values(), strict=True)]
    assert sum(right) >= 9, list(zip(HELD_OUT, guesses, strict=True))
    assert all(g.best == task for g, task in zip(guesses, HELD_OUT.values(), strict=True))


def test_an_off_topic_prompt_is_unsure(classifier: TaskClassifier) -> None:
    guess = classifier.classify(encode(["zxqv blorp fnord quux"])[0])
    assert guess.task is None and guess.confidence < 0.5


def test_the_temperature_is_calibrated_on_the_examples(classifier: TaskClassifier) -> None:
    assert TEMPERATURES[0] < classifier.temperature < TEMPERATURES[-1]  # an interior optimum
    one = TaskClassifier.build({"only": ["a", "b"]}, encode(["hello", "hi"]))
    assert one.classify(encode(["hey"])[0]).task == "only"  # one task: sure when close enough


TASK_CONFIG = """\
server: {{master_key: env:TEST_MASTER_KEY}}
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
models:
  - name: local-small
    deployments: [{{provider: fake, model: echo, tags: [local], hardware: {{usd_per_hour: 0}}}}]
  - name: cloud-big
    deployments:
      - {{provider: openai, model: rec-text, base_url: "{openai}", api_key: env:TEST_OPENAI_KEY,
          pricing: {{input_per_mtok: 3, output_per_mtok: 15}}}}
  - {{name: vectors, deployments: [{{provider: onnx-embeddings}}]}}
routes:
  work:
    candidates: [local-small, cloud-big]
    quality_target: 0.8
    tasks:
      extraction: {{model: local-small}}
      classification: {{model: local-small}}
      code: {{model: cloud-big}}
      legal: {{examples: ["Review this contract clause for liability risks", "Is this NDA enforceable?"]}}
    bandit: {{exploration: 0}}
    embeddings: vectors
    rules: [{{name: secret, when: {{tags: [secret]}}, action: block}}]
"""


@pytest.fixture(scope="module")
def task_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream
) -> Iterator[GatewayServer]:
    db = tmp_path_factory.mktemp("tasks") / "modelyard.db"
    server = GatewayServer(TASK_CONFIG.format(db=db, openai=fake_openai.base_url), ENVIRON).start()
    yield server
    server.stop()


def test_a_sure_task_pins_its_model_in_the_gateway(task_gateway: GatewayServer) -> None:
    with httpx.Client(base_url=task_gateway.url, headers=AUTH, timeout=60) as http:

        def decide(prompt: str) -> str:
            response = http.post(
                "/v1/chat/completions",
                json={"model": "work", "messages": [{"role": "user", "content": prompt}]},
            )
            assert response.status_code == 200, response.text
            return response.headers["x-modelyard-decision"]

        extraction = decide("Pull the invoice number and total out of this receipt")
        assert extraction.startswith(
            "work -> local-small; reason=task:extraction; task=extraction(extraction "
        )
        code = decide("Write a function in C that reverses a string in place")
        assert code.startswith("work -> cloud-big; reason=task:code")
        # A task with no model only labels the request: the quality target decides (and its
        # feedback lands in the task's own bandit bucket).
        legal = decide("Could this contract clause expose us to liability?")
        assert legal.startswith("work -> cloud-big; reason=target; task=legal(legal")
        again = decide("Pull the invoice number and total out of this receipt")
        assert again == extraction  # the cached analysis gives the same decision
        routes = http.get("/admin/routes").json()["routes"]
        work = next(r for r in routes if r["route"] == "work")
        assert work["cache"]["hits"] >= 1 and work["classifier"]["examples"] > 20


def test_embedding_requests_to_a_route_go_to_its_local_embedding_model(task_gateway: GatewayServer) -> None:
    import openai

    from tests.fakes.config import MASTER_KEY

    with openai.OpenAI(base_url=task_gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.embeddings.with_raw_response.create(model="work", input=["hello", "world"])
        assert (
            raw.headers["x-modelyard-decision"]
            == "work -> vectors; reason=embeddings; specialised:embeddings"
        )
        assert raw.headers["x-modelyard-deployment"] == "onnx/all-MiniLM-L6-v2-int8"
        assert len(raw.parse().data[0].embedding) == 384
        with pytest.raises(openai.PermissionDeniedError, match="rule 'secret' blocks"):
            client.embeddings.create(model="work", input=["x"], extra_headers={"x-modelyard-tags": "secret"})

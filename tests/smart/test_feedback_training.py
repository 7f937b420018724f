"""From traffic to a router file: a real gateway with route ``auto`` over two fake-upstream models
and prompt capture on; requests through the official ``openai`` SDK, thumbs through
``POST /v1/feedback``; then ``modelyard router train --from-feedback`` against the gateway's
database, and the router file it writes routes the hard topic to the strong model and the easy
one to the weak model. Also ``router export-feedback`` and the bad inputs, each one clear line.

Real MiniLM embeddings and scikit-learn training (a few seconds on two cores).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.routing.smart.learned.data import load_labels
from modelyard.routing.smart.learned.features import embed_texts
from modelyard.routing.smart.learned.runtime import LearnedRouter
from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import ENVIRON, MASTER_KEY
from tests.smart.conftest import AUTH

CONFIG = """\
server:
  master_key: env:TEST_MASTER_KEY
  request_timeout_s: 10
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
request_log: {{enabled: true, capture_prompts: true}}
models:
  - name: cheap
    deployments:
      - provider: openai
        model: rec-text
        base_url: {openai}
        api_key: env:TEST_OPENAI_KEY
        pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
  - name: big
    deployments:
      - provider: anthropic
        model: rec-text
        base_url: {anthropic}
        api_key: env:TEST_ANTHROPIC_KEY
        pricing: {{input_per_mtok: 3, output_per_mtok: 15}}
routes:
  auto:
    candidates: [cheap, big]
    quality: {{cheap: 0.6, big: 0.9}}
    quality_target: 0.7
    # An A/B split by tag, so both models see both topics (a bandit's exploration does this
    # in production, but at random).
    rules:
      - {{name: try-cheap, when: {{tags: [try-cheap]}}, action: restrict, models: [cheap]}}
      - {{name: try-big, when: {{tags: [try-big]}}, action: restrict, models: [big]}}
"""

HARD_SUBJECTS = [
    "the Riemann zeta function's non-trivial zeros",
    "compactness of closed bounded sets in Banach spaces",
    "the spectral theorem for self-adjoint operators",
    "Galois groups of irreducible quintic polynomials",
    "the Atiyah-Singer index theorem",
    "homotopy groups of spheres",
    "convergence of Fourier series in L2",
    "the Navier-Stokes existence problem",
    "Gödel's second incompleteness theorem",
    "the Sylow theorems for finite groups",
    "Riemannian curvature of hyperbolic manifolds",
    "the prime number theorem via complex analysis",
    "eigenvalues of random Hermitian matrices",
    "measure-theoretic conditional expectation",
    "the Hahn-Banach extension theorem",
    "étale cohomology of algebraic varieties",
]
HARD_ASKS = ["Prove rigorously a key lemma about {}.", "Give a graduate-level derivation concerning {}."]
EASY_SUBJECTS = [
    "fluffy pancakes",
    "tomato soup",
    "banana bread",
    "a grilled cheese sandwich",
    "scrambled eggs",
    "a fruit salad",
    "chocolate chip cookies",
    "lemonade",
    "a garden salad",
    "mashed potatoes",
    "iced tea",
    "a peanut butter sandwich",
    "oatmeal with berries",
    "garlic bread",
    "a vegetable omelette",
    "hot cocoa",
]
EASY_ASKS = ["What is a simple recipe for {}?", "How do I quickly make {} at home?"]


def prompts(asks: list[str], subjects: list[str]) -> list[str]:
    return [ask.format(subject) for ask in asks for subject in subjects]


HARD = prompts(HARD_ASKS, HARD_SUBJECTS[:12])
EASY = prompts(EASY_ASKS, EASY_SUBJECTS[:12])
HELD_OUT_HARD = prompts(HARD_ASKS, HARD_SUBJECTS[12:])
HELD_OUT_EASY = prompts(EASY_ASKS, EASY_SUBJECTS[12:])


@pytest.fixture(scope="module")
def database(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> Iterator[Path]:
    """A gateway's database after traffic and feedback: each prompt answered once, by one model
    (alternating), thumbs as the two topics deserve: the weak model fails the hard one."""
    db = tmp_path_factory.mktemp("feedback-training") / "modelyard.db"
    text = CONFIG.format(db=db, openai=fake_openai.base_url, anthropic=fake_anthropic.base_url)
    server = GatewayServer(text, ENVIRON).start()
    try:
        sent: list[tuple[str, str, bool]] = []  # (request id, model, good)
        with openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
            for index, prompt in enumerate(HARD + EASY):
                model = "cheap" if index % 2 == 0 else "big"
                raw = client.chat.completions.with_raw_response.create(
                    model="auto",
                    messages=[{"role": "user", "content": prompt}],
                    extra_headers={"x-modelyard-tags": f"try-{model}"},
                )
                assert raw.headers["x-modelyard-decision"].startswith(f"auto -> {model};")
                good = model == "big" or prompt in EASY
                sent.append((raw.headers["x-request-id"], model, good))
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http:
            for request_id, model, good in sent:
                answer = http.post(
                    "/v1/feedback", json={"request_id": request_id, "thumbs": "up" if good else "down"}
                )
                assert answer.status_code == 200 and answer.json()["model"] == model, answer.text
            for request_id, _, _ in sent:  # the request log is written in batches: wait for it
                deadline = time.monotonic() + 10
                while http.get(f"/admin/requests/{request_id}").status_code != 200:
                    assert time.monotonic() < deadline, f"{request_id} never reached the request log"
                    time.sleep(0.05)
        yield db
    finally:
        server.stop()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["router", *args], catch_exceptions=False)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_router_trained_from_feedback_routes_by_topic(database: Path, tmp_path: Path) -> None:
    out = tmp_path / "router.json"
    code, output = invoke(
        "train", "--from-feedback", "--database-url", f"sqlite:///{database}", "--route", "auto",
        "--since", "1d", "--strong", "big", "--weak", "cheap", "--out", str(out),
        "--clusters", "4", "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, output
    flat = " ".join(output.split())
    assert f"{len(HARD + EASY)} feedback row(s) in sqlite:///{database}: {len(HARD + EASY)} used" in flat
    assert "partial labels: strong scored on 24, weak on 24, both on 0" in flat
    router = LearnedRouter.load(out)
    assert (router.strong, router.weak) == ("big", "cheap")
    assert router.metadata["partial_labels"] == {"strong": 24, "weak": 24, "both": 0}
    assert router.metadata["data"] == f"sqlite:///{database}"
    threshold = router.threshold_for_share(0.5)
    for hard, easy in ((HARD, EASY), (HELD_OUT_HARD, HELD_OUT_EASY)):  # trained on, then never seen
        vectors = embed_texts(hard + easy, cache_dir=tmp_path / "cache")
        scores = [router.score(p, v) for p, v in zip(hard + easy, vectors, strict=True)]
        to_strong_hard = sum(s >= threshold for s in scores[: len(hard)]) / len(hard)
        to_weak_easy = sum(s < threshold for s in scores[len(hard) :]) / len(easy)
        assert to_strong_hard >= 0.75 and to_weak_easy >= 0.75, (to_strong_hard, to_weak_easy, scores)
    # The same data gives the same file.
    again = tmp_path / "again.json"
    code, output = invoke(
        "train", "--from-feedback", "--database-url", f"sqlite:///{database}", "--route", "auto",
        "--strong", "big", "--weak", "cheap", "--out", str(again), "--clusters", "4",
        "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, output
    assert again.read_bytes() == out.read_bytes()


def test_export_feedback_writes_labels_train_can_read(database: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    code, output = invoke("export-feedback", "--database-url", f"sqlite:///{database}", "--out", str(out))
    assert code == 0, output
    assert "wrote" in output and "models: big, cheap" in " ".join(output.split())
    labels = load_labels(out)
    assert labels.partial and len(labels) == len(HARD + EASY)
    assert labels.prompts[0] == HARD[0] and labels.scores["cheap"][0] == 0.0
    assert labels.mean_score("big") == 1.0
    code, output = invoke(
        "train", "--data", str(out), "--strong", "big", "--weak", "cheap", "--out", str(tmp_path / "r.json"),
        "--clusters", "4", "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, output
    code, output = invoke(
        "eval", "--data", str(out), "--strong", "big", "--weak", "cheap", "--cv", "3", "--clusters", "4",
        "--resamples", "50", "--out-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 0, output
    flat = " ".join(output.split())
    assert "APGR, CPT and the quality/cost plot need both models scored on the same prompts" in flat
    assert "score 0 of 48 prompts for both, so they are not computed" in flat
    assert "cross-fitted P(cheap good) on its 24 observed scores: Brier" in flat
    metrics = orjson.loads((tmp_path / "router-eval.json").read_bytes())
    assert metrics["apgr"] is None and not (tmp_path / "router-eval.png").exists()
    heads = metrics["heads"]
    assert heads["cheap"]["heads"] < heads["cheap"]["constant"]  # it learnt where the weak model fails
    learned = metrics["routers"]["learned router"]["ipw_quality"]
    random = metrics["routers"]["random"]["ipw_quality"]
    assert learned[1] > random[1]  # an A/B split: the estimate is fair here


def _one_clear_line(code: int, output: str, *parts: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    flat = " ".join(output.split())
    for part in parts:
        assert part in flat, output


def test_bad_inputs_fail_in_one_clear_line(database: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{database}"
    pair = ("--strong", "big", "--weak", "cheap")
    _one_clear_line(
        *invoke("train", "--from-feedback", "--database-url", url, "--strong", "gpt-9", "--weak", "cheap"),
        "--strong 'gpt-9' is not a model in",
        "its models are: big, cheap",
    )
    _one_clear_line(
        *invoke("train", "--from-feedback", "--database-url", url),
        "--from-feedback needs --strong MODEL --weak MODEL",
    )
    _one_clear_line(
        *invoke("train", "--data", str(tmp_path / "x.jsonl"), "--from-feedback", *pair),
        "give either --data LABELS or --from-feedback",
    )
    _one_clear_line(
        *invoke("train", "--from-feedback", "--database-url", f"sqlite:///{tmp_path}/nope.db", *pair),
        f"no database at {tmp_path}/nope.db",
    )
    _one_clear_line(
        *invoke("train", "--from-feedback", "--database-url", url, "--since", "yesterday-ish", *pair),
        "--since 'yesterday-ish': give a duration like 24h",
    )
    _one_clear_line(
        *invoke("export-feedback", "--database-url", url, "--route", "nightly", "-o", str(tmp_path / "x")),
        f"{len(HARD + EASY)} skipped not decided by the route asked for",
        "nothing usable",
    )
    _one_clear_line(
        *invoke("train", "--from-feedback", "--database-url", url, "--knn", "5", *pair),
        "the kNN component needs both models scored",
    )
    empty = tmp_path / "empty.db"

    async def create() -> None:
        from modelyard.store.sqlite import SqliteStore

        store = SqliteStore(str(empty))
        await store.open()
        await store.aclose()

    asyncio.run(create())
    _one_clear_line(
        *invoke("train", "--from-feedback", "--database-url", f"sqlite:///{empty}", *pair),
        f"no feedback in sqlite:///{empty}",
        "POST /v1/feedback",
    )


def test_the_config_names_the_database(database: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f'embedded_models: false\nstorage: {{database: "sqlite:///{database}"}}\n', "utf-8")
    out = tmp_path / "labels.jsonl"
    code, output = invoke("export-feedback", "--config", str(config), "-o", str(out))
    assert code == 0, output
    assert len(out.read_bytes().splitlines()) == len(HARD + EASY)

"""The decision: rules → task → learned router → cheapest candidate meeting the quality target;
deterministic given a router file, in this process and in another."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from modelyard.config.routes_schema import LearnedRouterConfig, RouteConfig, TaskConfig
from modelyard.errors import PermissionDeniedError
from modelyard.providers.embeddings import TokenWindow
from modelyard.routing.smart.decide import Analysis, allowed_candidates, choose
from modelyard.routing.smart.routes import build_route
from modelyard.routing.smart.rules import Restriction
from modelyard.routing.smart.tasks import TaskGuess
from tests.smart._decide import build, decide_all

COSTS = {"small": 0, "mid": 100, "big": 1000}
LOCAL = {"small"}


def route(**config: object) -> object:
    return build_route(
        "r",
        RouteConfig(candidates=["big", "small", "mid"], **config),  # type: ignore[arg-type]
        list(COSTS),
        COSTS.__getitem__,
        LOCAL.__contains__,
    )


def test_candidates_are_ranked_by_cost_with_priors_spread_over_the_ranks() -> None:
    r = route()
    assert [c.name for c in r.candidates] == ["small", "mid", "big"]  # type: ignore[attr-defined]
    # local: 0.5; cloud: 0.6 (cheapest) … 0.9 (costliest)
    assert [round(c.prior, 2) for c in r.candidates] == [0.5, 0.6, 0.9]  # type: ignore[attr-defined]
    assert [c.relative_cost for c in r.candidates] == [0.0, 0.1, 1.0]  # type: ignore[attr-defined]


def test_the_cheapest_candidate_meeting_the_target_wins() -> None:
    for target, expected in ((0.4, "small"), (0.55, "mid"), (0.7, "big"), (0.99, "big")):
        r = route(quality_target=target, bandit={"exploration": 0})
        d = choose(r, Restriction(), Analysis(), ["small", "mid", "big"])  # type: ignore[arg-type]
        assert d.model == expected, target
        assert d.reason == ("best" if target == 0.99 else "target")


def test_a_sure_task_pins_its_model_and_an_unsure_one_takes_the_fallback() -> None:
    r = route(
        tasks={"extraction": TaskConfig(model="small"), "code": TaskConfig(model="big")},
        fallback="mid",
        quality_target=0.4,
        bandit={"exploration": 0},
    )
    sure = Analysis(TaskGuess("code", "code", 0.9, 0.6))
    d = choose(r, Restriction(), sure, ["small", "mid", "big"])  # type: ignore[arg-type]
    assert (d.model, d.reason, d.task) == ("big", "task:code", "code")
    assert "task=code(code 0.90 sim=0.60)" in d.detail
    unsure = Analysis(TaskGuess(None, "code", 0.4, 0.3))
    d = choose(r, Restriction(), unsure, ["small", "mid", "big"])  # type: ignore[arg-type]
    assert (d.model, d.reason, d.task) == ("mid", "fallback", "")


def test_rules_restrict_what_the_task_and_the_target_may_choose() -> None:
    r = route(tasks={"code": TaskConfig(model="big")}, quality_target=0.99, bandit={"exploration": 0})
    local = Restriction(local_only=True, matched=("pii(email)",))
    allowed = allowed_candidates(r, local, None)  # type: ignore[arg-type]
    assert allowed == ["small"]
    d = choose(r, local, Analysis(TaskGuess("code", "code", 0.9, 0.6)), allowed)  # type: ignore[arg-type]
    assert (d.model, d.reason, d.local_only) == ("small", "best+rule:pii", True)
    assert allowed_candidates(r, Restriction(), ["mid"]) == ["mid"]  # type: ignore[arg-type]
    assert allowed_candidates(r, Restriction(), ["r"]) == ["small", "mid", "big"]  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError, match="rule 'stop' blocks"):
        choose(r, Restriction(blocked_by="stop", matched=("stop(team:x)",)), Analysis(), ["small"])  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError, match="allow only local models"):
        choose(r, local, Analysis(), [])  # type: ignore[arg-type]


def test_the_learned_router_picks_strong_or_weak_at_its_threshold() -> None:
    r = route(
        router=LearnedRouterConfig(file="x.json", strong="big", weak="small"), bandit={"exploration": 0}
    )
    r.learned_threshold = 0.6  # type: ignore[attr-defined]
    for p, expected in ((0.7, ("big", "learned:strong")), (0.59, ("small", "learned:weak"))):
        d = choose(r, Restriction(), Analysis(p_strong=p), ["small", "mid", "big"])  # type: ignore[arg-type]
        assert (d.model, d.reason) == expected
    # The router's choice is not allowed (local only): the target decides among what is.
    d = choose(r, Restriction(local_only=True), Analysis(p_strong=0.9), ["small"])  # type: ignore[arg-type]
    assert d.model == "small" and d.reason.startswith(("target", "best"))


# -- a real router file, trained here with `modelyard.routing.smart.learned`, and the real MiniLM --
HARD = [
    f"Prove that the sequence a(n+1) = sqrt({i} + a(n)) converges and find its limit" for i in range(2, 22)
]
HARD += [f"Derive the closed form of the integral of x^{i} e^(-x^2) over the real line" for i in range(20)]
EASY = [f"Say hello to my friend number {i}" for i in range(20)]
EASY += [f"What colour is a ripe banana? Question {i}" for i in range(20)]


def _encode(texts: list[str], window: TokenWindow | None = None) -> np.ndarray:
    from modelyard.providers.embeddings import OnnxEmbeddingProvider

    async def run() -> np.ndarray:
        provider = OnnxEmbeddingProvider(threads=1)
        try:
            return np.asarray(await provider.encode(texts, window))
        finally:
            await provider.aclose()

    return asyncio.run(run())


@pytest.fixture(scope="module", params=["full", "window"])
def router_config(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A route with a router trained on the full prompt, or on the bounded window + static bag
    (``--input window``): the gateway must embed requests as the file says."""
    pytest.importorskip("modelyard.routing.smart.learned.train")
    from modelyard.routing.smart.learned.data import LabelSet
    from modelyard.routing.smart.learned.features import FULL_PROMPT, WINDOWED
    from modelyard.routing.smart.learned.fileformat import write_router_file
    from modelyard.routing.smart.learned.train import TrainConfig, train_router

    representation = WINDOWED if request.param == "window" else FULL_PROMPT

    prompts = HARD + EASY
    strong = np.ones(len(prompts))
    weak = np.array([0.0] * len(HARD) + [1.0] * len(EASY))
    labels = LabelSet(prompts, {"gpt-4": strong, "mixtral": weak}, [""] * len(prompts), "synthetic")
    document = train_router(
        labels,
        _encode(prompts, representation.window).astype(np.float32),
        "gpt-4",
        "mixtral",
        TrainConfig(clusters=4, inner_folds=3, representation=representation),
    )
    work = tmp_path_factory.mktemp("learned")
    write_router_file(work / "router.json", document)
    config = work / "modelyard.yaml"
    config.write_text(
        """\
embedded_models: false
cloud_models_from_env: false
models:
  - {name: small, deployments: [{provider: fake, model: echo, tags: [local]}]}
  - name: big
    deployments: [{provider: fake, model: echo, pricing: {input_per_mtok: 3, output_per_mtok: 15}}]
routes:
  auto:
    candidates: [small, big]
    router: {file: router.json, strong: big, weak: small, threshold: 0.7}
"""
    )
    return config


PROBES = [
    "Prove that the series sum 1/n^2 converges and find its limit",
    "Derive the closed form of the integral of x^3 e^(-x^2) over the real line",
    "Say hello to my neighbour",
    "What colour is a ripe lemon?",
]


def test_decisions_are_deterministic_given_a_router_file_across_processes(router_config: Path) -> None:
    async def here() -> list[str]:
        smart, store = build(router_config, router_config.parent / "here.db")
        await store.open()
        try:
            first = await decide_all(smart, "auto", PROBES)
            smart.cache["auto"] = type(smart.cache["auto"])(0)  # no cache: recomputed from scratch
            again = await decide_all(smart, "auto", PROBES)
        finally:
            await smart.aclose()
            await store.aclose()
        assert [d.detail for d in first] == [d.detail for d in again]
        return [f"{d.model} {d.reason} {d.detail}" for d in first]

    mine = asyncio.run(here())
    assert [line.split()[0] for line in mine] == ["big", "big", "small", "small"], mine
    assert all(" learned:" in line for line in mine)
    prompts = router_config.parent / "prompts.json"
    prompts.write_bytes(orjson.dumps(PROBES))
    child = subprocess.run(
        [sys.executable, "-m", "tests.smart._decide", str(router_config), str(prompts)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert child.stdout.splitlines() == mine


def test_a_candidate_named_by_an_alias_keeps_its_locality(tmp_path: Path) -> None:
    config = tmp_path / "modelyard.yaml"
    config.write_text(
        """\
embedded_models: false
cloud_models_from_env: false
models:
  - {name: small, aliases: [tiny], deployments: [{provider: fake, model: echo, tags: [local]}]}
  - name: big
    deployments: [{provider: fake, model: echo, pricing: {input_per_mtok: 3, output_per_mtok: 15}}]
routes:
  auto:
    candidates: [tiny, big]
    rules: [{name: pii, when: {pii: [email]}}]
"""
    )

    async def run() -> list[str]:
        smart, store = build(config, tmp_path / "alias.db")
        await store.open()
        try:
            decisions = await decide_all(smart, "auto", ["write to a@b.io", "hello"])
        finally:
            await smart.aclose()
            await store.aclose()
        return [f"{d.model} {d.local_only}" for d in decisions]

    assert asyncio.run(run()) == ["tiny True", "big False"]


def test_a_failing_router_does_not_fail_requests(router_config: Path) -> None:
    """A router that raises (a corrupt or mismatched file) leaves the decision to the quality target."""

    class Broken:
        needs_embedding = False

        def score(self, prompt: str, embedding: object) -> float:
            raise ValueError("router expects a 384-float embedding")

    async def run() -> str:
        smart, store = build(router_config, router_config.parent / "broken.db")
        await store.open()
        try:
            await smart.ready()
            smart.routes["auto"].learned = Broken()
            (decision,) = await decide_all(smart, "auto", ["Say hello"])
            return decision.header()
        finally:
            await smart.aclose()
            await store.aclose()

    header = asyncio.run(run())
    assert header.startswith("auto -> big; reason=target; task=unavailable(ValueError)"), header

"""The router file: training is deterministic, the file round-trips, scoring is pure and stable,
and bad or old files fail with an error that names the file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from modelyard.routing.smart.learned.data import LabelSet
from modelyard.routing.smart.learned.fileformat import RouterFileError, write_router_file
from modelyard.routing.smart.learned.runtime import LearnedRouter
from modelyard.routing.smart.learned.train import TrainConfig, train_router

STRONG, WEAK = "big-model", "small-model"
# 300 prompts against 390 features: regularise the logistic heads much harder than the default
# (tuned for ~10k prompts), or the final model is far more confident than the out-of-fold ones
# that calibrate the thresholds.
SMALL = TrainConfig(clusters=8, knn_k=10, linear_c=0.02)


def synthetic(n: int = 300, seed: int = 0) -> tuple[LabelSet, np.ndarray]:
    """Prompts along an easy → hard direction in embedding space: the harder, the more often only
    the strong model is right (a continuous difficulty, so scores spread out)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    centre = np.random.default_rng(99).normal(size=(2, 384))  # the same topics for every seed
    vectors = np.outer(1 - difficulty, centre[0]) + np.outer(difficulty, centre[1])
    vectors += 0.8 * rng.normal(size=(n, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    strong = (rng.random(n) < 0.95 - 0.15 * difficulty).astype(float)
    weak = (rng.random(n) < 0.95 - 0.8 * difficulty).astype(float)
    hard = difficulty > 0.6
    prompts = [f"{'prove the theorem' if h else 'say hello'} #{i}" for i, h in enumerate(hard)]
    labels = LabelSet(
        prompts=prompts,
        scores={STRONG: strong, WEAK: weak},
        groups=["hard" if h else "easy" for h in hard],
        source="synthetic",
    )
    return labels, vectors.astype(np.float32)


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels, vectors = synthetic()
    path = tmp_path_factory.mktemp("router") / "router.json"
    write_router_file(path, train_router(labels, vectors, STRONG, WEAK, SMALL))
    return path


def test_training_twice_writes_byte_identical_files(router_file: Path, tmp_path: Path) -> None:
    labels, vectors = synthetic()
    again = tmp_path / "again.json"
    write_router_file(again, train_router(labels, vectors, STRONG, WEAK, SMALL))
    assert again.read_bytes() == router_file.read_bytes()


def test_round_trip_and_deterministic_scores(router_file: Path) -> None:
    router = LearnedRouter.load(router_file)
    assert (router.strong, router.weak, router.needs_embedding) == (STRONG, WEAK, True)
    assert router.metadata["prompts"] == 300
    labels, vectors = synthetic()
    scores = [router.score(p, v) for p, v in zip(labels.prompts, vectors, strict=True)]
    assert scores == [router.score(p, v) for p, v in zip(labels.prompts, vectors, strict=True)]
    reloaded = LearnedRouter.load(router_file)
    assert scores == [reloaded.score(p, v) for p, v in zip(labels.prompts, vectors, strict=True)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    hard = np.array([g == "hard" for g in labels.groups])
    # the hard topic needs the strong model: it must score higher on average
    assert np.mean(np.array(scores)[hard]) > np.mean(np.array(scores)[~hard]) + 0.1
    assert set(router.components(labels.prompts[0], vectors[0])) == {"linear", "clusters", "knn"}


def test_thresholds_are_calibrated_to_the_share_of_strong_calls(router_file: Path) -> None:
    router = LearnedRouter.load(router_file)
    thresholds = [router.threshold_for_share(s) for s in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert router.threshold_for_share(1.0) <= 0.0  # everything passes
    labels, vectors = synthetic(seed=5)  # fresh prompts from the same distribution
    scores = np.array([router.score(p, v) for p, v in zip(labels.prompts, vectors, strict=True)])
    for share in (0.2, 0.5, 0.8):
        realised = float((scores >= router.threshold_for_share(share)).mean())
        assert realised == pytest.approx(share, abs=0.12)
        assert router.share_for_threshold(router.threshold_for_share(share)) == pytest.approx(share, abs=0.02)
    with pytest.raises(ValueError, match="strong_share"):
        router.threshold_for_share(1.5)


def test_scoring_needs_no_sklearn_and_checks_the_embedding(router_file: Path) -> None:
    router = LearnedRouter.load(router_file)
    with pytest.raises(ValueError, match="needs the prompt's embedding"):
        router.score("hello", None)
    with pytest.raises(ValueError, match="384-float embedding"):
        router.score("hello", np.zeros(10))
    code = (
        "import sys; from modelyard.routing.smart.learned.runtime import LearnedRouter; import numpy as np; "
        f"r = LearnedRouter.load({str(router_file)!r}); v = np.ones(384, dtype=np.float32) / 384 ** 0.5; "
        "r.score('x', v); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'matplotlib')]; "
        "assert not bad, bad"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'{"hello": 1}', "is not a modelyard router file"),
        (b'{"format": "modelyard-learned-router", "format_version": 0}', "format_version 0"),
        (b'{"format": "modelyard-learned-router", "format_version": 1}', "lacks 'strong'"),
    ],
)
def test_bad_files_name_the_file_and_the_fix(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "router.json"
    path.write_bytes(content)
    with pytest.raises(RouterFileError, match=message) as info:
        LearnedRouter.load(path)
    assert str(path) in str(info.value)
    assert "router" in str(info.value)


def test_missing_and_damaged_files(tmp_path: Path, router_file: Path) -> None:
    with pytest.raises(RouterFileError, match="does not exist; train one"):
        LearnedRouter.load(tmp_path / "absent.json")
    document = orjson.loads(router_file.read_bytes())
    document["components"]["clusters"]["centroids"]["base64"] = "AAAA"
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(orjson.dumps(document))
    with pytest.raises(RouterFileError, match=r"damaged\.json"):
        LearnedRouter.load(damaged)

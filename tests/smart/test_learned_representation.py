"""The bounded routing representation (``router train --input window``): a token window of the
prompt for MiniLM (one model run of at most 64 tokens whatever the prompt's length) and a static
bag of all its word pieces; the router file records its representation (the default: the first
254 word pieces), and the runtime reads prompts exactly as training did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from modelyard.providers.embeddings import WINDOW_CHARS, TokenWindow, _Encoder, find_embedding_files
from modelyard.routing.smart.learned.data import LabelSet
from modelyard.routing.smart.learned.features import (
    DEFAULT_REPRESENTATION,
    DEFAULT_WINDOW,
    FULL_PROMPT,
    WINDOWED,
    Representation,
    StaticBag,
)
from modelyard.routing.smart.learned.fileformat import RouterFileError, write_router_file
from modelyard.routing.smart.learned.runtime import LearnedRouter
from modelyard.routing.smart.learned.train import TrainConfig, train_router

pytestmark = pytest.mark.localmodel

STRONG, WEAK = "big-model", "small-model"
QUESTION = "Which of the following best describes the structure that collects urine in the body?"
CHOICES = "\nA. Bladder\nB. Kidney\nC. Ureter\nD. Urethra\nAnswer:"


@pytest.fixture(scope="module")
def encoder() -> _Encoder:
    return _Encoder(find_embedding_files(), threads=1)


@pytest.fixture(scope="module")
def bag() -> StaticBag:
    return StaticBag.installed()


def test_window_validation() -> None:
    for head, tail in ((0, 4), (10, -1), (250, 10)):
        with pytest.raises(ValueError, match="token window needs"):
            TokenWindow(head, tail)
    assert DEFAULT_WINDOW.head + DEFAULT_WINDOW.tail + 2 == 64


def test_window_keeps_the_start_and_the_end(encoder: _Encoder) -> None:
    window = TokenWindow(8, 4)
    short = "a short prompt"
    assert encoder.window_ids(short, window) == encoder.untruncated.encode(short).ids
    long = QUESTION + " filler" * 300 + CHOICES
    full = encoder.untruncated.encode(long).ids
    ids = encoder.window_ids(long, window)
    assert ids == full[:9] + full[-5:]  # [CLS] + 8 first pieces, 4 last pieces + [SEP]
    huge = QUESTION + " filler" * (WINDOW_CHARS // 3) + CHOICES  # past the characters read
    assert len(huge) > 2 * WINDOW_CHARS
    assert encoder.window_ids(huge, window) == ids  # the same ends, at a bounded cost


def test_windowed_encoding_of_a_short_text_is_the_plain_one(encoder: _Encoder) -> None:
    plain, _ = encoder.encode([QUESTION])
    windowed, tokens = encoder.encode([QUESTION], DEFAULT_WINDOW)
    assert np.allclose(plain, windowed, atol=1e-6)
    long = QUESTION + " and more" * 200 + CHOICES
    _, tokens = encoder.encode([long], DEFAULT_WINDOW)
    assert tokens == 64
    _, tokens = encoder.encode([long])
    assert tokens == 256  # /v1/embeddings keeps the model's own truncation


def test_static_bag_sees_the_whole_prompt(bag: StaticBag) -> None:
    one = bag.vector(QUESTION + CHOICES)
    assert one.shape == (384,) and np.linalg.norm(one) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(bag.vectors([QUESTION + CHOICES, "x"])[0], one)
    padded = QUESTION + " the" * 500 + CHOICES
    tail_changed = QUESTION + " the" * 500 + "\nA. Heart\nB. Lung\nC. Liver\nD. Brain\nAnswer:"
    assert not np.allclose(bag.vector(padded), bag.vector(tail_changed))  # past any window
    assert np.linalg.norm(bag.vector("")) == pytest.approx(1.0, abs=1e-5)  # [UNK] for nothing


def test_representation_record_round_trips() -> None:
    for rep in (WINDOWED, FULL_PROMPT, Representation(TokenWindow(30, 10), static=False)):
        assert Representation.from_record(orjson.loads(orjson.dumps(rep.describe()))) == rep
    assert Representation.from_record(None) == FULL_PROMPT  # files of format 1
    assert DEFAULT_REPRESENTATION == FULL_PROMPT
    assert (WINDOWED.dimensions, FULL_PROMPT.dimensions) == (768, 384)


def _labels(n: int = 200) -> tuple[LabelSet, np.ndarray]:
    rng = np.random.default_rng(0)
    hard = rng.random(n) < 0.5
    prompts = [
        (f"Prove the theorem on compact operators, case {i}." if h else f"Say hello to guest {i}.")
        + " padding" * int(rng.integers(0, 8))
        for i, h in enumerate(hard)
    ]
    strong = (rng.random(n) < 0.9).astype(float)
    weak = np.where(hard, rng.random(n) < 0.3, rng.random(n) < 0.9).astype(float)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)  # no signal: the bag must carry it
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = LabelSet(prompts=prompts, scores={STRONG: strong, WEAK: weak}, groups=[""] * n, source="t")
    return labels, vectors


def test_router_records_its_representation_and_reads_prompts_as_trained(tmp_path: Path) -> None:
    labels, vectors = _labels()
    config = TrainConfig(clusters=4, linear_c=1.0, representation=WINDOWED)
    document = train_router(labels, vectors, STRONG, WEAK, config)
    assert document["embedding"]["dimensions"] == 768
    assert document["embedding"]["representation"]["window"] == {"head": 48, "tail": 14}
    path = tmp_path / "router.json"
    write_router_file(path, document)
    router = LearnedRouter.load(path)
    assert router.window == DEFAULT_WINDOW and router.representation == WINDOWED
    scores = np.array([router.score(p, v) for p, v in zip(labels.prompts, vectors, strict=True)])
    hard = np.array([p.startswith("Prove") for p in labels.prompts])
    assert scores[hard].mean() > scores[~hard].mean() + 0.1  # learned from the static bag alone
    plain = train_router(labels, vectors, STRONG, WEAK, TrainConfig(clusters=4))
    assert plain["embedding"]["dimensions"] == 384
    write_router_file(path, plain)
    assert LearnedRouter.load(path).window is None
    flat = np.array(
        [LearnedRouter.load(path).score(p, v) for p, v in zip(labels.prompts, vectors, strict=True)]
    )
    assert abs(flat[hard].mean() - flat[~hard].mean()) < abs(scores[hard].mean() - scores[~hard].mean())


def test_a_file_whose_dimensions_contradict_its_representation_is_refused(tmp_path: Path) -> None:
    labels, vectors = _labels(60)
    config = TrainConfig(clusters=2, linear_c=0.05, representation=WINDOWED)
    document = train_router(labels, vectors, STRONG, WEAK, config)
    document["embedding"]["representation"]["static"] = None
    path = tmp_path / "router.json"
    write_router_file(path, document)
    with pytest.raises(RouterFileError, match="do not match its representation"):
        LearnedRouter.load(path)


def test_idf_bag_weights_rare_pieces_over_common_ones(bag: StaticBag) -> None:
    prompts = [f"the answer to question {i} is the {word}" for i, word in enumerate(["kidney"] + ["x"] * 9)]
    idf = bag.idf_of(prompts)
    assert idf.shape == (bag.vocabulary,)
    the, kidney = (bag._tokenizer.token_to_id(w) for w in ("the", "kidney"))
    unseen = bag._tokenizer.token_to_id("bladder")
    assert idf[the] == pytest.approx(1.0) and idf[the] < idf[kidney] < idf[unseen]
    weighted = bag.with_idf(idf)
    text = "the the the the kidney"
    one = weighted.vector(text)
    assert np.linalg.norm(one) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(weighted.vectors([text, "x"])[0], one)
    row = np.array(bag._table[kidney], dtype=np.float32)
    row /= np.linalg.norm(row)
    assert float(one @ row) > float(bag.vector(text) @ row)  # the rare piece counts for more
    for broken in (idf[:-1], -idf, np.full_like(idf, np.nan)):
        with pytest.raises(ValueError, match="IDF vector needs"):
            bag.with_idf(broken)


def test_words_component_reads_the_whole_prompt(tmp_path: Path) -> None:
    labels, vectors = _labels()
    padded = ["Say hello." + " x" * 300 + p for p in labels.prompts]  # the same start for all
    labels = LabelSet(prompts=padded, scores=labels.scores, groups=labels.groups, source="t")
    config = TrainConfig(clusters=2, linear_c=0.01, words_c=10.0, representation=WINDOWED)
    document = train_router(labels, vectors, STRONG, WEAK, config)
    assert document["training"]["blend_weights"]["words"] > 0  # the embeddings are noise
    path = tmp_path / "router.json"
    write_router_file(path, document)
    router = LearnedRouter.load(path)
    gains = np.array([router.components(p, v)["words"] for p, v in zip(padded, vectors, strict=True)])
    hard = np.array(["Prove" in p for p in padded])
    assert gains[hard].mean() > gains[~hard].mean() + 0.2


def test_format_2_windowed_files_keep_their_plain_bag(tmp_path: Path) -> None:
    labels, vectors = _labels(80)
    plain_rep = Representation(DEFAULT_WINDOW, static=True, idf=False)
    assert WINDOWED.idf and Representation.from_record(WINDOWED.describe()) == WINDOWED
    old = train_router(labels, vectors, STRONG, WEAK, TrainConfig(clusters=2, representation=plain_rep))
    old["format_version"] = 2  # as written before IDF weighting: no static_weighting, no static_idf
    del old["embedding"]["representation"]["static_weighting"]
    assert "static_idf" not in old["features"]
    path = tmp_path / "old.json"
    write_router_file(path, old)
    router = LearnedRouter.load(path)
    assert router.representation == plain_rep
    new = train_router(labels, vectors, STRONG, WEAK, TrainConfig(clusters=2, representation=WINDOWED))
    assert new["format_version"] == 3 and "static_idf" in new["features"]
    write_router_file(path, new)
    idf_router = LearnedRouter.load(path)
    prompt = labels.prompts[0]
    assert idf_router.score(prompt, vectors[0]) != router.score(prompt, vectors[0])
    assert "words" not in old["components"] and new["blend"]["components"][-1] == "words"
    assert set(idf_router.components(prompt, vectors[0])) == {"linear", "clusters", "words"}
    words_only = {**new, "embedding": {**new["embedding"], "representation": plain_rep.describe()}}
    write_router_file(path, words_only)
    with pytest.raises(RouterFileError, match="words component needs an IDF-weighted static bag"):
        LearnedRouter.load(path)
    del new["features"]["static_idf"]
    write_router_file(path, new)
    with pytest.raises(RouterFileError, match=r"no features\.static_idf"):
        LearnedRouter.load(path)

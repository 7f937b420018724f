"""Evaluate a learned router beside the required baselines, three ways.

* **router file** (``--router``): score the data with a trained router through the runtime
  (:class:`LearnedRouter`). If the router was trained on these very prompts the result is
  in-sample and says so.
* **cross-fitting** (``--cv K``): K folds; each prompt is scored by a router trained on the other
  folds (exact-duplicate prompts share a fold). Learned baselines use the same folds.
* **out of domain** (``--train-data``): train on one data set, score another.

Every table holds always-weak, always-strong, random, oracle, prompt length, cross-fitted TF-IDF
kNN and, where the data has groups (MMLU subjects), the cross-fitted group prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from modelyard.providers.embeddings import TokenWindow
from modelyard.routing.smart.learned import baselines
from modelyard.routing.smart.learned.cost import PairPrices, per_prompt_cost
from modelyard.routing.smart.learned.data import LabelSet
from modelyard.routing.smart.learned.fileformat import write_router_file
from modelyard.routing.smart.learned.metrics import MetricsWithCI, bootstrap
from modelyard.routing.smart.learned.runtime import LearnedRouter
from modelyard.routing.smart.learned.train import TrainConfig, fold_ids, train_router

__all__ = ["EvalReport", "RouterResult", "evaluate"]

FloatArray = npt.NDArray[np.float64]


class Embedder(Protocol):
    """MiniLM vectors of texts' token ``window`` (:func:`~.features.embed_texts` or a caching
    wrapper of it); the default window is the default representation's."""

    def __call__(self, texts: list[str], *, window: TokenWindow | None = ...) -> npt.NDArray[np.float32]: ...


Step = Callable[[str], None]
LEARNED = "learned router"


@dataclass
class RouterResult:
    name: str
    scores: FloatArray | None
    """One score per prompt; None for a fixed policy (always weak / always strong)."""
    metrics: MetricsWithCI | None = None
    fixed_share: float | None = None
    note: str = ""


@dataclass
class EvalReport:
    title: str
    mode: str
    data: str
    prompts: int
    dropped_contaminated: int
    strong: str
    weak: str
    strong_quality: float
    weak_quality: float
    strong_score: FloatArray
    weak_score: FloatArray
    results: list[RouterResult]
    strong_cost: FloatArray | None = None
    """USD per prompt if answered by the strong model (None: no prices)."""
    weak_cost: FloatArray | None = None
    cost_note: str = ""
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> RouterResult:
        return next(r for r in self.results if r.name == name)


def score_with_router(
    router: LearnedRouter, prompts: list[str], embeddings: npt.NDArray[np.float32]
) -> FloatArray:
    """Scores through the runtime path (the exact arithmetic the gateway runs)."""
    return np.asarray([router.score(p, e) for p, e in zip(prompts, embeddings, strict=True)])


def _crossfit_learned(
    labels: LabelSet,
    embeddings: npt.NDArray[np.float32],
    strong: str,
    weak: str,
    folds: npt.NDArray[np.int64],
    config: TrainConfig,
    step: Step,
    workdir: Path,
) -> FloatArray:
    scores = np.zeros(len(labels))
    count = int(folds.max()) + 1
    for fold in range(count):
        train = np.flatnonzero(folds != fold)
        test = np.flatnonzero(folds == fold)
        step(f"outer fold {fold + 1}/{count}: training on {len(train)} prompts")
        document = train_router(labels.subset(train), embeddings[train], strong, weak, config)
        path = workdir / f"fold{fold}.router.json"
        write_router_file(path, document)
        router = LearnedRouter.load(path)
        scores[test] = score_with_router(router, [labels.prompts[i] for i in test], embeddings[test])
    return scores


def _crossfit_baselines(
    labels: LabelSet, gain: FloatArray, folds: npt.NDArray[np.int64]
) -> dict[str, FloatArray]:
    tfidf = np.zeros(len(labels))
    prior = np.zeros(len(labels))
    for fold in range(int(folds.max()) + 1):
        train = np.flatnonzero(folds != fold)
        test = np.flatnonzero(folds == fold)
        tfidf[test] = baselines.tfidf_knn(
            [labels.prompts[i] for i in train], gain[train], [labels.prompts[i] for i in test]
        )
        prior[test] = baselines.group_prior(
            [labels.groups[i] for i in train], gain[train], [labels.groups[i] for i in test]
        )
    out = {"TF-IDF kNN (k=50)": tfidf}
    if len(set(labels.groups)) > 1:
        out["group prior (gold subject)"] = prior
    return out


def evaluate(
    labels: LabelSet,
    strong: str,
    weak: str,
    *,
    embed: Embedder,
    router_path: Path | None = None,
    cv_folds: int | None = None,
    train_labels: LabelSet | None = None,
    config: TrainConfig | None = None,
    prices: PairPrices | None = None,
    assumed_output_tokens: int = 1,
    resamples: int = 1000,
    seed: int = 0,
    step: Step | None = None,
    workdir: Path,
) -> EvalReport:
    """Score ``labels`` with the learned router and every baseline, with bootstrap CIs."""
    note = step or (lambda _message: None)
    config = config or TrainConfig()
    s, w = labels.scores[strong], labels.scores[weak]
    gain = s - w
    notes: list[str] = []
    router = LearnedRouter.load(router_path) if router_path is not None else None
    window = config.representation.window if router is None else router.window
    note(f"embedding {len(labels)} prompts")
    embeddings = embed(labels.prompts, window=window)
    results: list[RouterResult] = []
    if router_path is not None and router is not None:
        learned = score_with_router(router, labels.prompts, embeddings)
        mode = f"router file {router_path}"
        if router.metadata.get("data_fingerprint") == labels.fingerprint():
            notes.append(
                "the router was trained on these same prompts: its row is IN-SAMPLE, not a fair test"
            )
        folds = fold_ids(labels.prompts, 5, seed)
        learned_baselines = _crossfit_baselines(labels, gain, folds)
    elif train_labels is not None:
        t_s, t_w = train_labels.scores[strong], train_labels.scores[weak]
        note(f"embedding {len(train_labels)} training prompts")
        train_emb = embed(train_labels.prompts, window=window)
        note("training on the training data")
        path = workdir / "out-of-domain.router.json"
        write_router_file(path, train_router(train_labels, train_emb, strong, weak, config))
        learned = score_with_router(LearnedRouter.load(path), labels.prompts, embeddings)
        mode = f"out of domain: trained on {train_labels.source} ({len(train_labels)} prompts)"
        learned_baselines = {
            "TF-IDF kNN (k=50)": baselines.tfidf_knn(train_labels.prompts, t_s - t_w, labels.prompts)
        }
        overlap = set(train_labels.groups) & set(labels.groups) - {""}
        if overlap:
            learned_baselines["group prior (gold subject)"] = baselines.group_prior(
                train_labels.groups, t_s - t_w, labels.groups
            )
    else:
        k = cv_folds or 5
        folds = fold_ids(labels.prompts, k, seed)
        learned = _crossfit_learned(labels, embeddings, strong, weak, folds, config, note, workdir)
        mode = f"{k}-fold cross-fitting (seed {seed})"
        learned_baselines = _crossfit_baselines(labels, gain, folds)
    results.append(RouterResult("always weak", None, fixed_share=0.0))
    results.append(RouterResult("always strong", None, fixed_share=1.0))
    results.append(RouterResult("random", baselines.random_scores(len(labels), seed)))
    results.append(RouterResult("oracle", baselines.oracle(s, w), note="knows the answers"))
    results.append(RouterResult("prompt length", baselines.prompt_length(labels.prompts)))
    for name, scores in learned_baselines.items():
        results.append(RouterResult(name, scores))
    results.append(RouterResult(LEARNED, learned))
    for result in results:
        if result.scores is not None:
            note(f"bootstrap ({resamples} resamples): {result.name}")
            result.metrics = bootstrap(result.scores, s, w, resamples=resamples, seed=seed)
    report = EvalReport(
        title=f"{strong} vs {weak} on {labels.source}",
        mode=mode,
        data=labels.source,
        prompts=len(labels),
        dropped_contaminated=labels.dropped_contaminated,
        strong=strong,
        weak=weak,
        strong_quality=float(s.mean()),
        weak_quality=float(w.mean()),
        strong_score=s,
        weak_score=w,
        results=results,
        notes=notes,
    )
    if prices is not None:
        note("pricing prompts")
        measured_out = {m: labels.output_tokens.get(m) for m in (strong, weak)}
        report.strong_cost = per_prompt_cost(
            labels.prompts, prices.strong, measured_out[strong], assumed_output_tokens
        )
        report.weak_cost = per_prompt_cost(
            labels.prompts, prices.weak, measured_out[weak], assumed_output_tokens
        )
        outputs = (
            "output tokens counted in the shipped responses"
            if all(v is not None for v in measured_out.values())
            else f"output tokens assumed {assumed_output_tokens} per answer"
        )
        report.cost_note = (
            f"strong {prices.strong.input}/{prices.strong.output} in/out ({prices.strong.origin}); "
            f"weak {prices.weak.input}/{prices.weak.output} ({prices.weak.origin}); input tokens: "
            f"cl100k_base; {outputs}"
        )
    return report

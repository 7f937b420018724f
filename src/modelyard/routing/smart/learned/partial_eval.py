"""``router eval`` on partial labels (feedback: one model scored per prompt): what can be measured.

APGR, CPT and the quality/cost curves need *both* models' scores on the same prompts (the
quality of a mixed policy is the strong score where it sends a prompt to the strong model and
the weak score elsewhere). With one score per prompt they cannot be computed without guessing
the missing half, so they are not reported. What the observed labels do support:

* with ``--cv``, **per-model Brier scores and accuracy** of the cross-fitted heads P(strong good)
  and P(weak good), each on its own model's observed scores, beside a constant (the training
  fold's mean): no assumption beyond the usual.
* **estimated quality at 20 %, 50 %, 80 % strong calls** (the top-scored share of this data sent
  to the strong model), by inverse propensity weighting: a prompt counts its chosen model's
  observed score divided by the share of prompts that model was scored on. This is unbiased
  only if which model answered was independent of the prompt (an A/B split, random
  exploration); when the route chose by the prompt, it is biased, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from modelyard.routing.smart.learned import baselines
from modelyard.routing.smart.learned.data import LabelSet
from modelyard.routing.smart.learned.evaluate import Embedder
from modelyard.routing.smart.learned.features import StaticBag, length_matrix
from modelyard.routing.smart.learned.fileformat import write_router_file
from modelyard.routing.smart.learned.partial import head_probabilities, label_counts
from modelyard.routing.smart.learned.runtime import LearnedRouter
from modelyard.routing.smart.learned.train import TrainConfig, _fit, fold_ids, train_router

__all__ = ["NOT_COMPUTED", "PartialReport", "PartialRow", "evaluate_partial", "ipw_quality"]

FloatArray = npt.NDArray[np.float64]
Step = Callable[[str], None]
SHARES = (0.2, 0.5, 0.8)
NOT_COMPUTED = (
    "APGR, CPT and the quality/cost plot need both models scored on the same prompts; these labels "
    "score {both} of {prompts} prompts for both, so they are not computed (label both models on a "
    "sample, e.g. from an eval, and merge it with `router export-feedback`'s JSONL)"
)
SELECTION_NOTE = (
    "the estimated qualities assume the answering model was picked independently of the prompt "
    "(an A/B split, random exploration); where the route chose by the prompt they are biased"
)


@dataclass
class PartialRow:
    name: str
    quality: list[float]
    """Per share in SHARES: the estimated mean quality (inverse propensity weighted)."""
    ci: list[tuple[float, float]]
    """Per share: the bootstrap 95 % interval."""


@dataclass
class PartialReport:
    title: str
    mode: str
    prompts: int
    counts: dict[str, int]
    strong: str
    weak: str
    strong_mean: float
    weak_mean: float
    rows: list[PartialRow]
    brier: dict[str, dict[str, float]] = field(default_factory=dict)
    """Model → {"heads": Brier, "constant": Brier of the training mean, "accuracy", "n"}."""
    notes: list[str] = field(default_factory=list)

    def json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "mode": self.mode,
            "prompts": self.prompts,
            "partial_labels": self.counts,
            "strong": self.strong,
            "weak": self.weak,
            "strong_observed_mean": self.strong_mean,
            "weak_observed_mean": self.weak_mean,
            "apgr": None,
            "shares": list(SHARES),
            "routers": {
                r.name: {"ipw_quality": r.quality, "ipw_quality_ci95": [list(c) for c in r.ci]}
                for r in self.rows
            },
            "heads": self.brier,
            "notes": self.notes,
        }


def ipw_quality(scores: FloatArray, strong: FloatArray, weak: FloatArray, share: float) -> float:
    """Estimated mean quality when the top ``share`` of prompts by score go to the strong model:
    each prompt's chosen model's observed score over the share of prompts that model was scored
    on (0 where it was not scored). Exact with complete labels."""
    n = len(scores)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(-scores, kind="stable")[: round(share * n)]] = True
    seen_s, seen_w = ~np.isnan(strong), ~np.isnan(weak)
    rate_s, rate_w = seen_s.mean(), seen_w.mean()
    value = np.zeros(n)
    if rate_s > 0:
        value += np.where(chosen & seen_s, np.nan_to_num(strong), 0.0) / rate_s
    if rate_w > 0:
        value += np.where(~chosen & seen_w, np.nan_to_num(weak), 0.0) / rate_w
    return float(value.mean())


def _row(
    name: str, scores: FloatArray, s: FloatArray, w: FloatArray, resamples: int, seed: int
) -> PartialRow:
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(scores), len(scores)) for _ in range(resamples)]
    quality, ci = [], []
    for share in SHARES:
        quality.append(ipw_quality(scores, s, w, share))
        draws = np.asarray([ipw_quality(scores[p], s[p], w[p], share) for p in picks])
        ci.append((float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))))
    return PartialRow(name, quality, ci)


def _brier(p: FloatArray, y: FloatArray) -> float:
    return float(np.mean((p - y) ** 2))


def evaluate_partial(
    labels: LabelSet,
    strong: str,
    weak: str,
    *,
    embed: Embedder,
    router_path: Path | None,
    cv_folds: int | None,
    config: TrainConfig,
    resamples: int,
    seed: int,
    workdir: Path,
    step: Step | None = None,
) -> PartialReport:
    """The measurable part of an evaluation on partial labels (see the module docstring)."""
    note = step or (lambda _message: None)
    s, w = labels.scores[strong], labels.scores[weak]
    counts = label_counts(s, w)
    loaded = LearnedRouter.load(router_path) if router_path is not None else None
    window = config.representation.window if loaded is None else loaded.window
    note(f"embedding {len(labels)} prompts")
    embeddings = embed(labels.prompts, window=window)
    brier: dict[str, dict[str, float]] = {}
    notes = [NOT_COMPUTED.format(both=counts["both"], prompts=len(labels)), SELECTION_NOTE]
    if router_path is not None and loaded is not None:
        router = loaded
        learned = np.asarray([router.score(p, e) for p, e in zip(labels.prompts, embeddings, strict=True)])
        mode = f"router file {router_path}"
        if router.metadata.get("data_fingerprint") == labels.fingerprint():
            notes.append(
                "the router was trained on these same prompts: its row is IN-SAMPLE, not a fair test"
            )
    else:
        k = cv_folds or 5
        folds = fold_ids(labels.prompts, k, seed)
        lengths = length_matrix(labels.prompts)
        representation = config.representation  # the heads read what the router's heads read
        bag = StaticBag.installed() if representation.static else None
        if bag is not None and representation.idf:  # diagnostic heads: IDF of all prompts' text, no labels
            bag = bag.with_idf(bag.idf_of(labels.prompts))
        vectors = representation.vectors(labels.prompts, embeddings, bag)
        learned = np.zeros(len(labels))
        heads = np.zeros((len(labels), 2))
        constant = np.zeros((len(labels), 2))
        for fold in range(k):
            train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            if not len(test):
                continue
            note(f"fold {fold + 1}/{k}: training on {len(train)} prompts")
            path = workdir / f"fold{fold}.router.json"
            write_router_file(
                path, train_router(labels.subset(train), embeddings[train], strong, weak, config)
            )
            router = LearnedRouter.load(path)
            learned[test] = [router.score(labels.prompts[i], embeddings[i]) for i in test]
            fitted = _fit(vectors[train], lengths[train], s[train], w[train], config)
            heads[test] = head_probabilities(fitted, vectors[test], lengths[test])
            constant[test] = [np.nanmean(s[train]), np.nanmean(w[train])]
        mode = f"{k}-fold cross-fitting (seed {seed})"
        for column, (model, y) in enumerate(((strong, s), (weak, w))):
            seen = ~np.isnan(y)
            if seen.any():
                brier[model] = {
                    "heads": _brier(heads[seen, column], y[seen]),
                    "constant": _brier(constant[seen, column], y[seen]),
                    "accuracy": float(np.mean((heads[seen, column] >= 0.5) == (y[seen] >= 0.5))),
                    "n": float(seen.sum()),
                }
    rows = [
        _row("random", baselines.random_scores(len(labels), seed), s, w, resamples, seed),
        _row("prompt length", baselines.prompt_length(labels.prompts), s, w, resamples, seed),
        _row("learned router", learned, s, w, resamples, seed),
    ]
    return PartialReport(
        title=f"{strong} vs {weak} on {labels.source} (partial labels)",
        mode=mode,
        prompts=len(labels),
        counts=counts,
        strong=strong,
        weak=weak,
        strong_mean=labels.mean_score(strong),
        weak_mean=labels.mean_score(weak),
        rows=rows,
        brier=brier,
        notes=notes,
    )

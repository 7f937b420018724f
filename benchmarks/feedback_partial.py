"""What training from feedback costs: a router trained on *partial* labels (one model scored per
prompt, as feedback gives) against one trained on complete labels, both judged on the complete
held-out labels (APGR), and the inverse-propensity quality estimate of ``router eval`` on partial
labels against the true quality.

Data: the shipped MMLU labels (../shared/data/routing/mmlu, contaminated prompts dropped), 5-fold
cross-fitted like ``router eval --cv 5``. Partial labels are made from the complete ones:

* ``A/B split``: each prompt keeps the strong or the weak score, at random (1:1) — feedback from
  a route that explores at random;
* ``route-biased``: the strong model answered long prompts more often (P(strong) from 0.15 for
  the shortest to 0.85 for the longest, by rank of length) — feedback from a route that already
  sent harder-looking prompts to the strong model. The IPW estimate is biased here, by design;
* ``complete, half the prompts``: both scores on a random half of the training prompts — as many
  scores as the partial variants, for a like-for-like comparison.

Run: ``.venv/bin/python benchmarks/feedback_partial.py [--data DIR] [--resamples N]``
(embeddings come from the ``router eval`` cache; a first run embeds 14k prompts, ≈40 min here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from modelyard.routing.smart.learned.data import load_labels
from modelyard.routing.smart.learned.evaluate import score_with_router
from modelyard.routing.smart.learned.features import embed_texts
from modelyard.routing.smart.learned.fileformat import write_router_file
from modelyard.routing.smart.learned.metrics import bootstrap
from modelyard.routing.smart.learned.partial_eval import ipw_quality
from modelyard.routing.smart.learned.runtime import LearnedRouter
from modelyard.routing.smart.learned.train import TrainConfig, fold_ids, train_router

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routing" / "mmlu"


def masks(prompts: list[str], seed: int) -> dict[str, npt.NDArray[np.bool_]]:
    """Per variant: True where the prompt keeps its strong score (else its weak one)."""
    rng = np.random.default_rng(seed)
    n = len(prompts)
    rank = np.argsort(np.argsort([len(p) for p in prompts], kind="stable"), kind="stable") / max(1, n - 1)
    return {
        "A/B split": rng.random(n) < 0.5,
        "route-biased": rng.random(n) < 0.15 + 0.7 * rank,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sample", type=int, default=0, help="A random sample of this many prompts (0: all; embedding all "
        "14k prompts takes ≈40 min on two busy cores)"
    )  # fmt: skip
    args = parser.parse_args()
    labels = load_labels(args.data)
    if 0 < args.sample < len(labels):
        labels = labels.subset(
            np.sort(np.random.default_rng(args.seed).permutation(len(labels))[: args.sample])
        )
    s, w = labels.scores[STRONG], labels.scores[WEAK]
    started = time.perf_counter()
    embeddings = embed_texts(labels.prompts)
    print(f"{len(labels)} prompts; strong {s.mean():.4f}, weak {w.mean():.4f}; embedded in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    folds = fold_ids(labels.prompts, args.folds, args.seed)
    variants: dict[str, npt.NDArray[np.bool_] | None] = {"complete labels": None, **masks(labels.prompts, 7)}
    half = np.random.default_rng(11).random(len(labels)) < 0.5
    variants["complete, half"] = None
    config = TrainConfig()
    with tempfile.TemporaryDirectory() as workdir:
        for name, keep_strong in variants.items():
            started = time.perf_counter()
            if keep_strong is None:
                train_labels = labels
            else:
                train_labels = replace(
                    labels,
                    scores={STRONG: np.where(keep_strong, s, np.nan), WEAK: np.where(keep_strong, np.nan, w)},
                )
            scores = np.zeros(len(labels))
            for fold in range(args.folds):
                train = np.flatnonzero((folds != fold) & (half if name == "complete, half" else True))
                test = np.flatnonzero(folds == fold)
                document = train_router(train_labels.subset(train), embeddings[train], STRONG, WEAK, config)
                path = Path(workdir) / f"{fold}.json"
                write_router_file(path, document)
                router = LearnedRouter.load(path)
                scores[test] = score_with_router(router, [labels.prompts[i] for i in test], embeddings[test])
            m = bootstrap(scores, s, w, resamples=args.resamples, seed=args.seed)
            line = (
                f"{name:16s} APGR {m.grid.apgr:.3f} [{m.grid_low.apgr:.3f}, {m.grid_high.apgr:.3f}]  "
                f"CPT(50%) {m.grid.cpt[1]:.1%} [{m.grid_low.cpt[1]:.1%}, {m.grid_high.cpt[1]:.1%}]  "
                f"({time.perf_counter() - started:.0f} s)"
            )
            if keep_strong is not None:
                partial_s = np.where(keep_strong, s, np.nan)
                partial_w = np.where(keep_strong, np.nan, w)
                for share in (0.2, 0.5, 0.8):
                    true = ipw_quality(scores, s, w, share)
                    estimate = ipw_quality(scores, partial_s, partial_w, share)
                    line += (
                        f"\n    quality at {share:.0%} strong: true {true:.4f}, IPW estimate {estimate:.4f}"
                    )
            print(line, flush=True)


if __name__ == "__main__":
    main()

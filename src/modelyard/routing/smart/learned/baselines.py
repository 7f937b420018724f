"""The baselines every router table must show (ROUTING.md §5.3): each returns one score per test prompt.

Higher score = sent to the strong model earlier. Learned baselines are cross-fitted by the caller
(trained on other folds, or on another data set out of domain).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["group_prior", "oracle", "prompt_length", "random_scores", "tfidf_knn"]

FloatArray = npt.NDArray[np.float64]


def random_scores(n: int, seed: int = 0) -> FloatArray:
    """Uniform random scores (seeded): the diagonal, APGR ≈ 0.5."""
    return np.random.default_rng(seed).random(n)


def oracle(strong: FloatArray, weak: FloatArray) -> FloatArray:
    """Knows the answers: the strong model only where it scores higher (an upper bound, APGR > 1)."""
    return strong - weak


def prompt_length(prompts: Sequence[str]) -> FloatArray:
    """Longest prompts to the strong model first."""
    return np.asarray([len(p) for p in prompts], dtype=np.float64)


def tfidf_knn(
    train_prompts: Sequence[str], train_gain: FloatArray, test_prompts: Sequence[str], k: int = 50
) -> FloatArray:
    """Mean gain of the ``k`` nearest training prompts by TF-IDF cosine (as in ROUTING.md §5.4)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]

    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=50_000)
    train = vectorizer.fit_transform(train_prompts)
    test = vectorizer.transform(test_prompts)
    k = min(k, train.shape[0])
    out = np.empty(len(test_prompts))
    for start in range(0, len(test_prompts), 1024):
        sims = (test[start : start + 1024] @ train.T).toarray()
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + 1024] = train_gain[nearest].mean(axis=1)
    return out


def group_prior(
    train_groups: Sequence[str], train_gain: FloatArray, test_groups: Sequence[str], shrinkage: float = 10.0
) -> FloatArray:
    """Each group's (e.g. MMLU subject's) mean training gain, shrunk towards the overall mean."""
    overall = float(train_gain.mean())
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for group, gain in zip(train_groups, train_gain, strict=True):
        sums[group] = sums.get(group, 0.0) + float(gain)
        counts[group] = counts.get(group, 0) + 1
    return np.asarray(
        [(sums.get(g, 0.0) + shrinkage * overall) / (counts.get(g, 0) + shrinkage) for g in test_groups],
        dtype=np.float64,
    )

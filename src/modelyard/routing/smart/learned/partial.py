"""Training on *partial* labels: prompts scored for only one of the two models (feedback).

Feedback scores the model that answered, so most prompts carry the strong model's score or the
weak one's, not both (NaN marks the missing one). :mod:`.train` calls in here when it sees NaN;
complete labels never reach this module, so their router files stay byte-identical.

* ``linear``: P(strong good) is fitted on the prompts the strong model was scored on, P(weak
  good) on those the weak model was scored on; the gain is still their difference.
* ``clusters``: each cluster's gain is the difference of the two models' per-cluster mean scores,
  each over the prompts scored for that model and shrunk towards that model's overall mean.
* the blend target: where both scores are known, the observed gain; where one is, the observed
  score minus (or from) the other model's *out-of-fold* estimate for that prompt. Its
  expectation given the prompt is the true gain when the estimate is right, and no prompt's own
  label leaks into the estimate it is compared with.
* ``knn``: not supported (it needs a gain per stored prompt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from modelyard.routing.smart.learned.train import TrainConfig, _Fitted

__all__ = ["fit_partial", "head_probabilities", "label_counts", "pseudo_gain"]

FloatArray = npt.NDArray[np.float64]
NEUTRAL = 0.5
"""The estimate for a model with no scored prompt in a training fold (an uninformed guess)."""


def _head(x: FloatArray, y: FloatArray, c: float) -> tuple[FloatArray, float]:
    from modelyard.routing.smart.learned.train import _soft_logistic

    seen = ~np.isnan(y)
    if not seen.any():
        return np.zeros(x.shape[1]), 0.0  # logit 0: P = NEUTRAL
    return _soft_logistic(x[seen], y[seen], c)


def _cluster_means(label: npt.NDArray[np.int64], y: FloatArray, k: int, shrinkage: float) -> FloatArray:
    seen = ~np.isnan(y)
    overall = float(y[seen].mean()) if seen.any() else NEUTRAL
    sums = np.bincount(label[seen], y[seen], minlength=k)
    counts = np.bincount(label[seen], minlength=k)
    return np.asarray((sums + shrinkage * overall) / (counts + shrinkage), dtype=np.float64)


def fit_partial(
    embeddings: npt.NDArray[np.float32],
    lengths: FloatArray,
    strong: FloatArray,
    weak: FloatArray,
    cfg: TrainConfig,
) -> _Fitted:
    """The components of :func:`.train._fit` from partial labels (NaN = not scored)."""
    from modelyard.routing.smart.learned.train import fit_heads_and_clusters

    fitted, label, k = fit_heads_and_clusters(embeddings, lengths, strong, weak, cfg, _head)
    if label is not None:
        fitted.cluster_gain = _cluster_means(label, strong, k, cfg.shrinkage) - _cluster_means(
            label, weak, k, cfg.shrinkage
        )
    return fitted


def head_probabilities(
    fitted: _Fitted, embeddings: npt.NDArray[np.float32], lengths: FloatArray
) -> FloatArray:
    """(n, 2): the linear heads' P(strong good) and P(weak good) for these prompts."""
    assert fitted.linear_w is not None and fitted.linear_b is not None
    x = np.hstack([embeddings.astype(np.float64), (lengths - fitted.length_mean) / fitted.length_scale])
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * (x @ fitted.linear_w.T + fitted.linear_b))))


def pseudo_gain(strong: FloatArray, weak: FloatArray, out_of_fold: FloatArray) -> FloatArray:
    """Per prompt: the observed gain, or the observed score against the other model's
    out-of-fold estimate (``out_of_fold``: (n, 2) from :func:`head_probabilities`)."""
    s = np.where(np.isnan(strong), out_of_fold[:, 0], strong)
    w = np.where(np.isnan(weak), out_of_fold[:, 1], weak)
    return np.asarray(s - w, dtype=np.float64)


def label_counts(strong: FloatArray, weak: FloatArray) -> dict[str, int]:
    """How many prompts carry the strong score, the weak score and both (router file metadata)."""
    s, w = ~np.isnan(strong), ~np.isnan(weak)
    return {"strong": int(s.sum()), "weak": int(w.sum()), "both": int((s & w).sum())}

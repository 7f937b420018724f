"""Train a strong-vs-weak router from quality labels and prompt embeddings (scikit-learn, offline).

The router estimates g(x) = E[strong score - weak score | prompt x], the quality gained by
sending x to the strong model; sorting prompts by g is the best possible routing order. Three
components each estimate g, and a blend learnt by *inner cross-fitting* combines them:

1. ``linear``: two L2-regularised logistic regressions over [MiniLM embedding, scaled length
   features], for P(strong right) and P(weak right) (soft labels in [0, 1] are fitted exactly by
   weighting each prompt once as right and once as wrong); g = difference.
2. ``clusters``: k-means (``clusters`` centroids) over the embeddings; each cluster's g is its
   training prompts' mean gain shrunk towards the overall mean by ``shrinkage`` pseudo-prompts.
   This recovers most of MMLU's per-subject prior without subject labels.
3. ``words`` (with an IDF-weighted static bag, :data:`~.features.WINDOWED`): the same two logistic
   heads over the prompt's TF-IDF of MiniLM word pieces (the bag's IDF, ``words_c``), read over
   the whole prompt (first 8,192 characters) at the cost of a sparse dot product.
4. ``knn`` (off unless ``knn_k`` > 0): the mean gain of the ``knn_k`` most similar training
   prompts. It stores every training embedding in the router file (≈1.5 kB a prompt).

The blend is a least-squares fit of the observed gain on the components' out-of-fold estimates
(``inner_folds`` folds, 3 by default), so no component is weighted by how well it memorised its own training
data. Calibration thresholds (score for each share of strong calls) come from the same
out-of-fold blended scores. All randomness is seeded; the same inputs give the same file.

Labels that score only one model per prompt (feedback) are trained by :mod:`.partial`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.routing.smart.learned.data import LabelError, LabelSet
from modelyard.routing.smart.learned.features import (
    DEFAULT_REPRESENTATION,
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MODEL_ID,
    LENGTH_FEATURES,
    Representation,
    StaticBag,
    length_matrix,
)
from modelyard.routing.smart.learned.fileformat import FORMAT, FORMAT_VERSION, encode_array
from modelyard.routing.smart.learned.partial import fit_partial, head_probabilities, label_counts, pseudo_gain

__all__ = ["TrainConfig", "fold_ids", "train_router"]

FloatArray = npt.NDArray[np.float64]
Step = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_router` (defaults fixed on one MMLU fold split; see docs)."""

    linear_c: float = 0.3
    """Inverse L2 strength of the logistic heads (scikit-learn's ``C``)."""
    clusters: int = 100
    """k-means centroids; 0 disables the cluster component."""
    shrinkage: float = 10.0
    """Pseudo-prompts pulling each cluster's gain towards the overall mean."""
    knn_k: int = 0
    """Neighbours of the kNN component; 0 (default) leaves it out of the file."""
    words_c: float = 1.0
    """Inverse L2 strength of the ``words`` heads (word-piece TF-IDF), trained only when the
    representation weights its static bag by IDF and every prompt scores both models; 0 disables."""
    inner_folds: int = 3
    """Folds of the inner cross-fit that learns the blend and the calibration."""
    length_prior: float = 0.5
    """Weight of a prompt-length prior added to the blended gain, in standard deviations of the
    blend's cross-fitted gains per standard deviation of log prompt length (0 disables it).
    Longer prompts are, on average, the harder ones (RouteLLM's length baseline); the learned
    components cannot know that for prompts unlike their training data, where they go flat.
    0.5 was chosen on MMLU alone, by leave-one-subject-group-out cross-fitting (pooled APGR
    0.597 at 0, 0.614 at 0.25, 0.619 at 0.5, 0.618 at 0.75; benchmarks/RESULTS.md)."""
    seed: int = 0
    representation: Representation = DEFAULT_REPRESENTATION
    """What the router reads of a prompt (recorded in the file; the runtime reads prompts alike):
    by default MiniLM over the first 254 word pieces; :data:`~.features.WINDOWED` bounds the cost
    (a token window joined with a static bag of all word pieces). ``embeddings`` given to
    :func:`train_router` must be of its window (:func:`~.features.embed_texts` with ``window=``)."""


def fold_ids(prompts: list[str], folds: int, seed: int) -> npt.NDArray[np.int64]:
    """A fold per prompt; exact-duplicate prompts share a fold, so none is tested on its twin."""
    unique: dict[str, int] = {}
    group = np.asarray([unique.setdefault(p, len(unique)) for p in prompts], dtype=np.int64)
    rng = np.random.default_rng(seed)
    per_group = rng.permutation(len(unique)) % folds
    return np.asarray(per_group[group], dtype=np.int64)


@dataclass
class _Fitted:
    length_mean: FloatArray
    length_scale: FloatArray
    linear_w: FloatArray | None = None
    linear_b: FloatArray | None = None
    centroids: npt.NDArray[np.float32] | None = None
    cluster_gain: FloatArray | None = None
    bank: npt.NDArray[np.float32] | None = None
    bank_gain: FloatArray | None = None

    def names(self) -> list[str]:
        out = []
        if self.linear_w is not None:
            out.append("linear")
        if self.centroids is not None:
            out.append("clusters")
        if self.bank is not None:
            out.append("knn")
        return out


def _soft_logistic(x: FloatArray, y: FloatArray, c: float) -> tuple[FloatArray, float]:
    """Logistic regression on soft labels y in [0, 1]: each row once as 1 (weight y), once as 0."""
    from scipy import sparse  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    if np.all(y == y[0]):  # one class only: a constant model
        p = float(np.clip(y[0], 1e-4, 1 - 1e-4))
        return np.zeros(x.shape[1]), float(np.log(p / (1 - p)))
    model = LogisticRegression(C=c, max_iter=3000, tol=1e-5)
    doubled = sparse.vstack([x, x]).tocsr() if sparse.issparse(x) else np.vstack([x, x])
    model.fit(doubled, np.r_[np.ones(len(y)), np.zeros(len(y))], sample_weight=np.r_[y, 1.0 - y])
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


HeadFit = Callable[[FloatArray, FloatArray, float], tuple[FloatArray, float]]
"""Fits one linear head (weights, bias) to per-prompt scores (NaN = not scored, where supported)."""


def fit_heads_and_clusters(
    embeddings: npt.NDArray[np.float32],
    lengths: FloatArray,
    strong: FloatArray,
    weak: FloatArray,
    cfg: TrainConfig,
    head: HeadFit,
) -> tuple[_Fitted, npt.NDArray[np.intp] | None, int]:
    """What complete and partial labels fit alike: the length scaling, the two linear heads
    (P(strong right), P(weak right)) and the k-means centroids; with each prompt's cluster (None
    when there are too few prompts for clusters) and the number of clusters. The cluster gains are
    the caller's."""
    mean = lengths.mean(axis=0)
    scale = lengths.std(axis=0)
    scale[scale < 1e-9] = 1.0
    fitted = _Fitted(length_mean=mean, length_scale=scale)
    x = np.hstack([embeddings.astype(np.float64), (lengths - mean) / scale])
    ws, bs = head(x, strong, cfg.linear_c)
    ww, bw = head(x, weak, cfg.linear_c)
    fitted.linear_w = np.vstack([ws, ww])
    fitted.linear_b = np.asarray([bs, bw])
    k = min(cfg.clusters, len(embeddings) // 5)
    if k < 2:
        return fitted, None, k
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]

    km = KMeans(n_clusters=k, n_init=1, random_state=cfg.seed).fit(embeddings)
    centroids = km.cluster_centers_.astype(np.float32)
    centroids /= np.clip(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12, None)
    fitted.centroids = centroids
    label = np.argmax(embeddings @ centroids.T, axis=1)  # the runtime's own assignment rule
    return fitted, label, k


def _fit(
    embeddings: npt.NDArray[np.float32],
    lengths: FloatArray,
    strong: FloatArray,
    weak: FloatArray,
    cfg: TrainConfig,
) -> _Fitted:
    if np.isnan(strong).any() or np.isnan(weak).any():
        return fit_partial(embeddings, lengths, strong, weak, cfg)
    gain = strong - weak
    fitted, label, k = fit_heads_and_clusters(embeddings, lengths, strong, weak, cfg, _soft_logistic)
    if label is not None:
        sums = np.bincount(label, gain, minlength=k)
        counts = np.bincount(label, minlength=k)
        fitted.cluster_gain = (sums + cfg.shrinkage * gain.mean()) / (counts + cfg.shrinkage)
    if cfg.knn_k > 0:
        fitted.bank = embeddings.astype(np.float32)
        fitted.bank_gain = gain.astype(np.float64)
    return fitted


def _fit_words(pieces: Any, strong: FloatArray, weak: FloatArray, c: float) -> tuple[FloatArray, FloatArray]:
    """The ``words`` heads: P(strong right), P(weak right) over word-piece TF-IDF rows (sparse)."""
    ws, bs = _soft_logistic(pieces, strong, c)
    ww, bw = _soft_logistic(pieces, weak, c)
    return np.vstack([ws, ww]), np.asarray([bs, bw])


def _words_gain(heads: tuple[FloatArray, FloatArray], pieces: Any) -> FloatArray:
    weights, bias = heads
    p = 0.5 * (1.0 + np.tanh(0.5 * (np.asarray(pieces @ weights.T) + bias)))
    return np.asarray(p[:, 0] - p[:, 1], dtype=np.float64)


def component_gains(
    fitted: _Fitted, embeddings: npt.NDArray[np.float32], lengths: FloatArray, knn_k: int
) -> FloatArray:
    """(n, components) gain estimates, the batch form of the runtime's arithmetic."""
    columns = []
    if fitted.linear_w is not None and fitted.linear_b is not None:
        x = np.hstack([embeddings.astype(np.float64), (lengths - fitted.length_mean) / fitted.length_scale])
        p = 0.5 * (1.0 + np.tanh(0.5 * (x @ fitted.linear_w.T + fitted.linear_b)))
        columns.append(p[:, 0] - p[:, 1])
    if fitted.centroids is not None and fitted.cluster_gain is not None:
        columns.append(fitted.cluster_gain[np.argmax(embeddings @ fitted.centroids.T, axis=1)])
    if fitted.bank is not None and fitted.bank_gain is not None:
        out = np.empty(len(embeddings))
        k = min(knn_k, len(fitted.bank))
        for start in range(0, len(embeddings), 512):
            sims = embeddings[start : start + 512] @ fitted.bank.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            out[start : start + 512] = fitted.bank_gain[nearest].mean(axis=1)
        columns.append(out)
    return np.column_stack(columns)


def _blend(features: FloatArray, gain: FloatArray) -> tuple[FloatArray, float]:
    """Least squares of the gain on the components, weights kept non-negative (NNLS on centred data)."""
    from scipy.optimize import nnls  # type: ignore[import-untyped]

    mean_x = features.mean(axis=0)
    mean_y = float(gain.mean())
    weights, _ = nnls(features - mean_x, gain - mean_y)
    if not np.any(weights > 0):
        weights = np.full(features.shape[1], 1.0 / features.shape[1])
    return weights, mean_y - float(mean_x @ weights)


def _calibration(scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Score thresholds that send share 0.00, 0.01, ..., 1.00 of these prompts to the strong model."""
    shares = np.linspace(0.0, 1.0, 101)
    ordered = np.sort(scores)[::-1]
    thresholds = np.empty_like(shares)
    for i, share in enumerate(shares):
        k = round(share * len(ordered))
        if k == 0:
            thresholds[i] = float(np.nextafter(ordered[0], np.inf))  # above every score: no strong call
        else:
            thresholds[i] = float(ordered[k - 1])
    thresholds[-1] = min(thresholds[-1], 0.0)  # share 1: every score passes
    return shares, thresholds


def train_router(
    labels: LabelSet,
    embeddings: npt.NDArray[np.float32],
    strong: str,
    weak: str,
    config: TrainConfig = TrainConfig(),
    *,
    step: Step | None = None,
) -> dict[str, Any]:
    """The router file document (see :mod:`.fileformat`) for ``strong`` vs ``weak`` on ``labels``."""
    if embeddings.shape != (len(labels), EMBEDDING_DIMENSIONS):
        raise ValueError(
            f"expected ({len(labels)}, {EMBEDDING_DIMENSIONS}) embeddings, got {embeddings.shape}"
        )
    representation = config.representation
    bag = StaticBag.installed() if representation.static else None
    idf = bag.idf_of(labels.prompts) if bag is not None and representation.idf else None
    if bag is not None and idf is not None:
        bag = bag.with_idf(idf)
    embeddings = representation.vectors(labels.prompts, embeddings, bag)  # what the runtime sees
    note = step or (lambda _message: None)
    s, w = labels.scores[strong], labels.scores[weak]
    lengths = length_matrix(labels.prompts)
    gain = s - w
    partial = bool(np.isnan(gain).any())
    if partial and config.knn_k > 0:
        raise LabelError(
            f"{labels.source}: the kNN component needs both models scored on every prompt; "
            "these labels score one model on some prompts (feedback): train without --knn"
        )
    folds = fold_ids(labels.prompts, max(2, min(config.inner_folds, len(labels))), config.seed)
    use_words = bag is not None and idf is not None and config.words_c > 0 and not partial
    pieces = bag.pieces_matrix(labels.prompts) if bag is not None and use_words else None
    words_out_of_fold = np.zeros(len(labels))
    out_of_fold: FloatArray | None = None
    heads_out_of_fold = np.full((len(labels), 2), np.nan)
    for fold in range(int(folds.max()) + 1):
        note(f"inner fold {fold + 1}/{int(folds.max()) + 1}")
        train, test = folds != fold, folds == fold
        if not test.any() or not train.any():
            continue
        fitted = _fit(embeddings[train], lengths[train], s[train], w[train], config)
        part = component_gains(fitted, embeddings[test], lengths[test], config.knn_k)
        if out_of_fold is None:
            out_of_fold = np.zeros((len(labels), part.shape[1]))
        out_of_fold[test] = part
        if pieces is not None:
            heads = _fit_words(pieces[train], s[train], w[train], config.words_c)
            words_out_of_fold[test] = _words_gain(heads, pieces[test])
        if partial:
            heads_out_of_fold[test] = head_probabilities(fitted, embeddings[test], lengths[test])
    assert out_of_fold is not None
    note("final fit on all prompts")
    fitted = _fit(embeddings, lengths, s, w, config)
    names = fitted.names()
    columns = out_of_fold[:, : len(names)]
    words = _fit_words(pieces, s, w, config.words_c) if pieces is not None else None
    if words is not None:
        names.append("words")
        columns = np.column_stack([columns, words_out_of_fold])
    if partial:
        gain = pseudo_gain(s, w, heads_out_of_fold)
    weights, bias = _blend(columns, gain)
    oof_blend = columns @ weights + bias
    length_z = (lengths[:, 0] - fitted.length_mean[0]) / fitted.length_scale[0]
    length_prior = float(config.length_prior * oof_blend.std())
    oof_gain = np.clip(oof_blend + length_prior * length_z, -1.0, 1.0)
    shares, thresholds = _calibration((1.0 + oof_gain) / 2.0)
    components: dict[str, Any] = {}
    if fitted.linear_w is not None and fitted.linear_b is not None:
        components["linear"] = {
            "weights": encode_array(fitted.linear_w),
            "bias": encode_array(fitted.linear_b),
        }
    if fitted.centroids is not None and fitted.cluster_gain is not None:
        components["clusters"] = {
            "centroids": encode_array(fitted.centroids),
            "gains": encode_array(fitted.cluster_gain),
        }
    if words is not None:
        components["words"] = {"weights": encode_array(words[0]), "bias": encode_array(words[1], "float64")}
    if fitted.bank is not None and fitted.bank_gain is not None:
        components["knn"] = {
            "bank": encode_array(fitted.bank, "float16"),
            "gains": encode_array(fitted.bank_gain),
            "k": config.knn_k,
        }
    from modelyard import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "strong": strong,
        "weak": weak,
        "embedding": {
            "model": EMBEDDING_MODEL_ID,
            "dimensions": representation.dimensions,
            "representation": representation.describe(),
        },
        "features": {
            "length": list(LENGTH_FEATURES),
            "length_mean": encode_array(fitted.length_mean, "float64"),
            "length_scale": encode_array(fitted.length_scale, "float64"),
            **({"static_idf": encode_array(idf, "float32")} if idf is not None else {}),
        },
        "components": components,
        "blend": {
            "components": names,
            "weights": encode_array(weights, "float64"),
            "bias": bias,
            "length_prior": length_prior,
        },
        "calibration": {
            "strong_share": encode_array(shares, "float64"),
            "threshold": encode_array(thresholds, "float64"),
        },
        "training": {
            "data": labels.source,
            "data_fingerprint": labels.fingerprint(),
            "prompts": len(labels),
            "dropped_contaminated": labels.dropped_contaminated,
            "strong_mean_score": labels.mean_score(strong) if partial else float(s.mean()),
            "weak_mean_score": labels.mean_score(weak) if partial else float(w.mean()),
            **({"partial_labels": label_counts(s, w)} if partial else {}),
            "config": asdict(config),
            "blend_weights": dict(zip(names, [float(x) for x in weights], strict=True)),
            "modelyard_version": __version__,
        },
    }

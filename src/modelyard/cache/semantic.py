"""The semantic cache's vector index: per-partition matrices of unit vectors, searched with numpy.

An entry holds the query's embedding, its context's embedding (None for a first question) and
the exact-cache key its answer is stored under. A request matches an entry of the same partition
(tenant, model, parameters, tools, system prompt — see :mod:`modelyard.cache.keys`) when

* the queries' cosine similarity is at least the threshold, and
* both have no earlier turns, or their contexts' similarity is at least ``context_threshold``.

So a follow-up ("and in 2019?") never matches a first question, nor a follow-up to another
conversation. A brute-force matrix product is exact and, measured (benchmarks/semantic_cache.py),
fast enough for the sizes one partition holds; each partition is a ring that overwrites its
oldest entry when full, and the least recently used partitions are dropped beyond
``max_partitions``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Match", "SemanticIndex"]

Vector = npt.NDArray[np.float32]
INITIAL_CAPACITY = 64


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    """The exact-cache key the matched answer is stored under."""
    similarity: float


class _Partition:
    def __init__(self, dimensions: int, max_entries: int) -> None:
        self.max_entries = max_entries
        capacity = min(INITIAL_CAPACITY, max_entries)
        self.queries: Vector = np.zeros((capacity, dimensions), dtype=np.float32)
        self.contexts: Vector | None = None  # only partitions of follow-ups have contexts
        self.keys: list[str] = []
        self.size = 0
        self.next = 0  # the slot the next entry goes to (the oldest, once full)

    def add(self, key: str, query: Vector, context: Vector | None) -> None:
        if self.size < self.max_entries and self.size == len(self.queries):
            grown = min(self.max_entries, 2 * len(self.queries))
            self.queries = np.resize(self.queries, (grown, self.queries.shape[1]))
            if self.contexts is not None:
                self.contexts = np.resize(self.contexts, (grown, self.contexts.shape[1]))
        slot = self.next
        self.queries[slot] = query
        if context is not None and self.contexts is None:
            self.contexts = np.zeros_like(self.queries)
        if self.contexts is not None:
            self.contexts[slot] = 0.0 if context is None else context
        if slot < len(self.keys):
            self.keys[slot] = key
        else:
            self.keys.append(key)
        self.size = min(self.size + 1, self.max_entries)
        self.next = (slot + 1) % self.max_entries

    def search(
        self, query: Vector, context: Vector | None, threshold: float, context_threshold: float
    ) -> Match | None:
        if not self.size:
            return None
        # einsum runs on this thread; a BLAS product would wake a thread pool that, on a busy
        # machine, made p99 2-3x worse (measured, benchmarks/semantic_cache.py --latency-only).
        scores = np.einsum("ij,j->i", self.queries[: self.size], query)
        if context is not None:
            if self.contexts is None:
                return None
            context_scores = np.einsum("ij,j->i", self.contexts[: self.size], context)
            scores = np.where(context_scores >= context_threshold, scores, -1.0)
        best = int(np.argmax(scores))
        similarity = float(scores[best])
        if similarity < threshold:
            return None
        return Match(self.keys[best], similarity)


class SemanticIndex:
    """Vectors by partition; see the module docstring for what matches."""

    def __init__(self, *, dimensions: int, max_entries: int, max_partitions: int = 10_000) -> None:
        self._dimensions = dimensions
        self._max_entries = max_entries
        self._max_partitions = max_partitions
        self._partitions: OrderedDict[str, _Partition] = OrderedDict()

    def __len__(self) -> int:
        return sum(p.size for p in self._partitions.values())

    def nbytes(self) -> int:
        return sum(
            p.queries.nbytes + (0 if p.contexts is None else p.contexts.nbytes)
            for p in self._partitions.values()
        )

    def clear(self) -> None:
        self._partitions.clear()

    def partitions(self) -> int:
        return len(self._partitions)

    def add(self, partition: str, key: str, query: Vector, context: Vector | None = None) -> None:
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition(self._dimensions, self._max_entries)
            while len(self._partitions) > self._max_partitions:
                self._partitions.popitem(last=False)
        self._partitions.move_to_end(partition)
        part.add(key, query, context)

    def search(
        self,
        partition: str,
        query: Vector,
        context: Vector | None = None,
        *,
        threshold: float,
        context_threshold: float,
    ) -> Match | None:
        part = self._partitions.get(partition)
        if part is None:
            return None
        self._partitions.move_to_end(partition)
        return part.search(query, context, threshold, context_threshold)

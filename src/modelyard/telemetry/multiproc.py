"""Prometheus metrics across several worker processes (``modelyard serve --workers N``).

prometheus_client's multiprocess mode keeps each process's values in memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR``; whichever worker answers ``GET /metrics`` sums them all. The mode
is chosen when prometheus_client is *imported*, so the directory must be in the environment
before the workers start: :func:`multiprocess_metrics_dir` is entered by the ``serve`` command
around ``uvicorn.run`` (uvicorn spawns fresh interpreters, which inherit the environment).
Each run gets its own empty directory, removed when the server exits: files left by an earlier
run would otherwise be added to this one's counts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import values

__all__ = ["ENV_VAR", "multiprocess_enabled", "multiprocess_metrics_dir"]

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    """Whether this process records metrics in multiprocess mode (the directory was set before
    prometheus_client was imported, as in a worker started by ``serve --workers N``)."""
    return bool(os.environ.get(ENV_VAR)) and values.ValueClass is not values.MutexValue


@contextmanager
def multiprocess_metrics_dir(workers: int) -> Iterator[str | None]:
    """For ``workers > 1``: a fresh per-run metrics directory in ``PROMETHEUS_MULTIPROC_DIR`` for
    the block (an operator's own setting is kept, and not removed). Yields the directory in use."""
    if workers <= 1:
        yield None
        return
    if os.environ.get(ENV_VAR):
        yield os.environ[ENV_VAR]
        return
    directory = tempfile.mkdtemp(prefix="modelyard-metrics-")
    os.environ[ENV_VAR] = directory
    try:
        yield directory
    finally:
        os.environ.pop(ENV_VAR, None)
        shutil.rmtree(directory, ignore_errors=True)

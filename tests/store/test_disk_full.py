"""D5: the disk fills up under the SQLite ledger (a small tmpfs, mounted as root as in CI).

Figures: paid requests are refused at once with 503 (NotReadyError), settlements of requests
already served are kept queued, not lost; once space returns every one of them is written,
`integrity_check` is ok, and admissions work again.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.errors import NotReadyError
from modelyard.store.base import Scope
from modelyard.store.sqlite import SqliteStore
from tests.store._support import CENT, USD, make_budget, reservation, settlement, unique


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("D5 mounts a 3 MiB tmpfs and needs root (CI runs as root): run the suite as root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); D5 needs `mount -t tmpfs`")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Take every free byte of the filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


async def test_d5_disk_full_refuses_admissions_and_keeps_settlements(small_disk: Path) -> None:
    store = SqliteStore(str(small_disk / "ledger.db"))
    await store.open()
    try:
        key = unique("k")
        await make_budget(store, Scope.KEY, key, 100 * USD)
        assert await store.reserve(reservation(unique("r"), CENT, ((Scope.KEY, key),))) is None
        filler = small_disk / "filler"
        fill(filler)

        started = time.monotonic()
        with pytest.raises(NotReadyError, match="budget database is unavailable"):
            await store.reserve(reservation(unique("r"), CENT, ((Scope.KEY, key),)))
        assert time.monotonic() - started < 5.0  # refused, not left hanging for the 30 s timeout

        served = [unique("served") for _ in range(50)]
        for request_id in served:  # requests already answered: their rows must not be lost
            await store.settle(settlement(request_id, CENT, key_id=key))
        await asyncio.sleep(0.3)
        assert store.queued_settlements > 0  # waiting for space, not dropped

        filler.unlink()  # space returns
        await asyncio.wait_for(store.flush(), timeout=20)
        assert store.queued_settlements == 0
        assert await store.reserve(reservation(unique("r"), CENT, ((Scope.KEY, key),))) is None
    finally:
        await store.aclose()
    with sqlite3.connect(small_disk / "ledger.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        marks = ",".join("?" * len(served))
        found = conn.execute(f"SELECT count(*) FROM ledger WHERE request_id IN ({marks})", served).fetchone()[
            0
        ]
    assert found == len(served)

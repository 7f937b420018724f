"""The local journal of budget leases: what a process admitted against its leases, on disk before
the upstream call, so that a process killed with requests in flight is settled exactly on restart.

A process owns one journal: a lock file ``<id>.lock`` it holds ``flock``-ed for its whole life, and
segments ``<id>.<n>.jnl`` of JSON lines. Records:

- ``L`` a lease: its id and what its recovered rows carry (key, team, user, org, tags);
- ``R`` a request admitted against a lease (its id, reserved maximum, model, time); written with
  ``write(2)`` before the upstream call, so it survives ``kill -9`` (the kernel holds it); segments
  are ``fdatasync``-ed every tick, so a power cut loses at most one tick of records;
- ``S`` a request finished, with its ledger rows;
- ``C`` a lease whose settlement is committed (replay skips it).

A later ``R`` of the same request moves it to another lease (a lease split, see
:mod:`modelyard.policy.leases`). A segment is deleted once every lease it names is committed.

Replay (:func:`orphans`) takes the lock of every journal whose owner is gone (its ``flock`` is free)
and turns it into one settlement per lease not yet committed: the finished requests' real rows, and
a conservative row at the reserved maximum for each request that never finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from modelyard.store._ledger import ReservationRow, budget_keys, recovery_settlement
from modelyard.store.base import AttemptRow, Reservation, Settlement

log = logging.getLogger("modelyard.leases")

SEGMENT_RECORDS = 50_000
"""Records per segment before the next one starts (so a finished segment can be deleted)."""


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    leases: set[str] = field(default_factory=set)
    records: int = 0


def _row_from(fields: dict[str, Any]) -> AttemptRow:
    return AttemptRow(**{**fields, "tags": tuple(fields["tags"])})


class LeaseJournal:
    """This process's journal in ``directory`` (created ``0700`` if missing)."""

    def __init__(self, directory: Path, *, segment_records: int = SEGMENT_RECORDS) -> None:
        self.directory = directory
        self.id = uuid.uuid4().hex
        self._segment_records = segment_records
        self._lock_fd: int | None = None
        self._segments: list[_Segment] = []
        self._next = 0
        self._committed: set[str] = set()
        self._dirty = False

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Locked under a temporary name first: a recovering process never sees the lock
            # file of a live process unlocked.
            staging = self.directory / f"{self.id}.locking"
            fd = os.open(staging, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            staging.rename(self.directory / f"{self.id}.lock")
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot create the lease journal in {self.directory}: {exc.strerror}; set "
                "storage.lease_journal to a writable directory",
            ) from None
        self._lock_fd = fd
        self._start_segment()

    def close(self, *, clean: bool) -> None:
        """Close the files; ``clean`` (every lease committed) also deletes them."""
        for segment in self._segments:
            with contextlib.suppress(OSError):
                os.fsync(segment.fd)
            os.close(segment.fd)
            if clean:
                segment.path.unlink(missing_ok=True)
        self._segments = []
        if self._lock_fd is not None:
            if clean:
                (self.directory / f"{self.id}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)  # releases the flock: a journal left behind is now an orphan
            self._lock_fd = None

    def _start_segment(self) -> None:
        path = self.directory / f"{self.id}.{self._next}.jnl"
        self._next += 1
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._segments.append(_Segment(path, fd))

    # -- records -----------------------------------------------------------------------------
    def _write(self, record: dict[str, Any], lease_id: str | None) -> None:
        segment = self._segments[-1]
        os.write(segment.fd, orjson.dumps(record) + b"\n")
        segment.records += 1
        if lease_id is not None:
            segment.leases.add(lease_id)
        self._dirty = True

    def lease(self, lease_id: str, template: Reservation) -> None:
        self._write(
            {
                "k": "L",
                "l": lease_id,
                "b": [list(key) for key in budget_keys(template.budgets)],
                "key": template.key_id,
                "team": template.team_id,
                "user": template.user_id,
                "org": template.org_id,
                "tags": list(template.tags),
            },
            lease_id,
        )

    def admitted(
        self, lease_id: str, request_id: str, max_cost_nano: int, model: str, created_at: float
    ) -> None:
        """A request reserved against ``lease_id`` (again, when a split moves it to a new lease)."""
        self._write(
            {"k": "R", "l": lease_id, "q": request_id, "m": max_cost_nano, "model": model, "t": created_at},
            lease_id,
        )

    def finished(self, settlement: Settlement) -> None:
        self._write({"k": "S", "q": settlement.request_id, "rows": settlement.rows}, None)

    def committed(self, lease_ids: list[str]) -> None:
        """These leases' settlements are committed: replay skips them, their segments may go."""
        for lease_id in lease_ids:
            self._write({"k": "C", "l": lease_id}, None)
            self._committed.add(lease_id)

    # -- upkeep ------------------------------------------------------------------------------
    def sync(self) -> None:
        """``fdatasync`` the current segment (called off the event loop, once per tick)."""
        if self._dirty and self._segments:
            self._dirty = False
            os.fdatasync(self._segments[-1].fd)

    def compact(self) -> None:
        """Start a new segment when the current one is full; delete finished ones."""
        if not self._segments:
            return  # not opened yet
        if self._segments[-1].records >= self._segment_records:
            self._start_segment()
        keep: list[_Segment] = []
        for segment in self._segments[:-1]:
            if segment.leases <= self._committed:
                os.close(segment.fd)
                segment.path.unlink(missing_ok=True)
            else:
                keep.append(segment)
        self._segments = [*keep, self._segments[-1]]
        named = set().union(*(s.leases for s in self._segments))
        self._committed &= named


@dataclass(slots=True)
class Orphan:
    """A dead process's journal, locked by us until :meth:`remove`."""

    lock_path: Path
    lock_fd: int
    segments: list[Path]
    settlements: list[Settlement]
    recovered_requests: int

    def remove(self) -> None:
        for path in self.segments:
            path.unlink(missing_ok=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self.lock_fd)


def _records(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines):
            if not line:
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                if number < len(lines) - 2:  # only the last record may be torn by the crash
                    log.warning("lease journal %s: unreadable record on line %d skipped", path, number + 1)


def replay(paths: list[Path], now: float) -> tuple[list[Settlement], int]:
    """One settlement per lease not committed, and how many requests are charged at their maximum."""
    leases: dict[str, dict[str, Any]] = {}
    lease_of: dict[str, str] = {}
    admitted: dict[str, dict[str, Any]] = {}
    finished: dict[str, list[AttemptRow]] = {}
    committed: set[str] = set()
    for record in _records(paths):
        kind = record.get("k")
        if kind == "L":
            leases[record["l"]] = record
        elif kind == "R":
            lease_of[record["q"]] = record["l"]
            admitted[record["q"]] = record
        elif kind == "S":
            finished[record["q"]] = [_row_from(fields) for fields in record["rows"]]
        elif kind == "C":
            committed.add(record["l"])
    rows_of: dict[str, list[AttemptRow]] = {lease_id: [] for lease_id in leases if lease_id not in committed}
    recovered = 0
    for request_id, lease_id in lease_of.items():
        if lease_id not in rows_of:
            continue
        if request_id in finished:
            rows_of[lease_id] += finished[request_id]
            continue
        meta, req = leases[lease_id], admitted[request_id]
        pending = ReservationRow(
            request_id,
            int(req["m"]),
            tuple((str(s), str(i)) for s, i in meta["b"]),
            "pending",
            meta["key"],
            meta["team"],
            meta["user"],
            meta["org"],
            tuple(meta["tags"]),
            str(req["model"]),
            float(req["t"]),
        )
        rows_of[lease_id] += recovery_settlement(pending, now).rows
        recovered += 1
    return [Settlement(lease_id, tuple(rows)) for lease_id, rows in rows_of.items()], recovered


def orphans(directory: Path, now: float) -> list[Orphan]:
    """Every journal in ``directory`` whose process is gone, locked and replayed."""
    found: list[Orphan] = []
    if not directory.is_dir():
        return found
    for lock_path in sorted(directory.glob("*.lock")):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # another process recovered it just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its owner is alive
            continue
        owner = lock_path.name.removesuffix(".lock")
        segments = sorted(directory.glob(f"{owner}.*.jnl"), key=lambda p: int(p.name.rsplit(".", 2)[1]))
        settlements, recovered = replay(segments, now)
        found.append(Orphan(lock_path, fd, segments, settlements, recovered))
    return found

"""Budget leases (``storage.reservations: leased``) on real SQLite and PostgreSQL stores.

The same figures as the per-request store: C1 (barrier race), C2 (two processes), D2 (``kill -9``
with requests in flight), plus what leases add: few commits, a split for a long request, the fall
back to one request's maximum near a budget's end, and the bound on how long one process's lease
can refuse another process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.config import load_config
from modelyard.errors import ConfigError
from modelyard.policy.leases import DirectReservations, LeasedReservations
from modelyard.state import AppState
from modelyard.store.base import Denied, Scope, Store
from tests.store._support import CENT, USD, Backend, make_budget, reservation, settlement, spend_of
from tests.store._workers import barrier_race, lease_then_hang, leased_race_child, race_in_two_processes
from tests.store.test_concurrency import CLIENTS, LIMIT, REPS
from tests.store.test_crash import kill_when, raw


async def ledger_ids(store: Store) -> dict[str, set[str]]:
    """request_id -> statuses of its ledger rows."""
    found: dict[str, set[str]] = {}
    for row in await store.ledger_rows(since=0, limit=100_000):
        found.setdefault(row.request_id, set()).add(row.status)
    return found


def check_leased_race(spend: int, reserved: int, admitted: int) -> None:
    assert reserved == 0, "every lease settled after the race"
    assert spend == admitted * CENT
    assert spend <= LIMIT, f"a lease never admits past the budget: spend {spend} > {LIMIT}"
    assert spend >= 0.98 * LIMIT, f"false rejections: utilisation {spend / LIMIT:.1%} < 98%"


async def test_many_requests_two_commits_per_lease(backend: Backend, tmp_path: Path) -> None:
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal", max_age_s=30)
    try:
        await make_budget(store, Scope.KEY, "fast", 1000 * USD)
        budgets = ((Scope.KEY, "fast"),)
        for i in range(300):
            assert await leases.reserve(reservation(f"fast-{i}", CENT, budgets, deadline_at=1e12)) is None
            await leases.settle(settlement(f"fast-{i}", CENT // 10))
        # The first lease holds 4 requests' maximum; each next one grows from the last one's use.
        assert leases.leases_taken <= 6
        await store.flush()
        spend, reserved = await spend_of(store, Scope.KEY, "fast")
        assert reserved == leases_taken_reserved(leases)  # only the lease still open is reserved
        assert spend < 300 * (CENT // 10)  # its requests are charged when it settles
        await leases.flush()
        assert await spend_of(store, Scope.KEY, "fast") == (300 * (CENT // 10), 0)
        ids = await ledger_ids(store)
        assert len(ids) == 300 and all(s == {"ok"} for s in ids.values())  # one row each, own id
        assert await raw(backend, "SELECT COUNT(*) FROM {t}reservations WHERE status = 'pending'") == [(0,)]
    finally:
        await leases.aclose()
        await store.aclose()
    assert not list((tmp_path / "journal").iterdir()), "a clean shutdown leaves no journal behind"


def leases_taken_reserved(leases: LeasedReservations) -> int:
    return sum(lease.amount for lease in leases._open.values())


async def test_c1_barrier_race_with_leases(backend: Backend, tmp_path: Path) -> None:
    """C1 with leases: 64 clients released together against $1.00, max cost $0.01."""
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal")
    leases.start()
    try:
        reps = REPS // 2
        for rep in range(reps):
            await make_budget(store, Scope.KEY, f"c1l-{rep}", LIMIT)
        for rep in range(reps):
            budgets = ((Scope.KEY, f"c1l-{rep}"),)
            admitted = await barrier_race(leases, budgets, CLIENTS, f"c1l-{rep}")  # type: ignore[arg-type]
            check_leased_race(*await spend_of(store, Scope.KEY, f"c1l-{rep}"), admitted)
    finally:
        await leases.aclose()
        await store.aclose()


async def test_c2_two_processes_with_leases(backend: Backend, tmp_path: Path) -> None:
    """C2 with leases: two OS processes, each with its own leases on one database."""
    store = await backend.open()
    reps = REPS // 4
    try:
        for rep in range(reps):
            await make_budget(store, Scope.KEY, f"c2l-{rep}", LIMIT)
        journal = str(tmp_path / "journal")
        admitted = await race_in_two_processes(leased_race_child, backend, journal, reps, CLIENTS // 2)
        for rep in range(reps):
            total = admitted["p1"][rep] + admitted["p2"][rep]
            check_leased_race(*await spend_of(store, Scope.KEY, f"c2l-{rep}"), total)
        assert sum(admitted["p1"]) > 0 and sum(admitted["p2"]) > 0
    finally:
        await store.aclose()


async def test_d2_kill9_with_leased_requests_in_flight(backend: Backend, tmp_path: Path) -> None:
    """D2 with leases: 32 admitted, 10 finished, then ``kill -9``; the next start replays the
    journal: finished requests get their real rows, the 22 others their reserved maximum."""
    store = await backend.open()
    await make_budget(store, Scope.KEY, "d2l", 100 * USD)
    await store.aclose()
    journal = tmp_path / "journal"
    ack = tmp_path / "acks.txt"
    ack.touch()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=lease_then_hang, args=(backend, str(journal), str(ack), 32, 10))
    child.start()
    await asyncio.to_thread(kill_when, child, ack, 1)
    assert ack.read_text() == "ready\n"

    store = await backend.open()
    try:
        spend, reserved = await spend_of(store, Scope.KEY, "d2l")
        assert spend == 0 and reserved >= 32 * CENT  # the leases, still pending in the store
        leases = LeasedReservations(store, journal)
        assert await leases.recover() == 22
        assert await spend_of(store, Scope.KEY, "d2l") == (10 * (CENT // 4) + 22 * CENT, 0)
        assert await raw(backend, "SELECT COUNT(*) FROM {t}reservations WHERE status = 'pending'") == [(0,)]
        ids = await ledger_ids(store)
        assert {i: ids[f"d2l-{i}"] for i in range(32)} == {
            i: {"ok"} if i < 10 else {"recovered"} for i in range(32)
        }
        assert not list(journal.iterdir()), "a replayed journal is removed"
        assert await LeasedReservations(store, journal).recover() == 0  # nothing twice
        assert await store.recover_pending(now=2e9) == 0  # deadline recovery finds nothing left
        assert await spend_of(store, Scope.KEY, "d2l") == (10 * (CENT // 4) + 22 * CENT, 0)
    finally:
        await store.aclose()


async def test_long_request_is_split_off_so_finished_rows_land(backend: Backend, tmp_path: Path) -> None:
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal", max_age_s=0.05)
    leases.start()
    try:
        await make_budget(store, Scope.KEY, "split", 100 * USD)
        budgets = ((Scope.KEY, "split"),)
        assert await leases.reserve(reservation("long", 3 * CENT, budgets, deadline_at=1e12)) is None
        for i in range(5):
            assert await leases.reserve(reservation(f"short-{i}", CENT, budgets, deadline_at=1e12)) is None
            await leases.settle(settlement(f"short-{i}", CENT // 2))
        await asyncio.sleep(0.6)  # retired after 0.05 s, split after 0.2 s
        assert set(await ledger_ids(store)) == {f"short-{i}" for i in range(5)}
        assert await spend_of(store, Scope.KEY, "split") == (5 * (CENT // 2), 3 * CENT)  # "long" still held
        await leases.settle(settlement("long", 2 * CENT))
        await leases.flush()
        assert await spend_of(store, Scope.KEY, "split") == (5 * (CENT // 2) + 2 * CENT, 0)
        assert "long" in await ledger_ids(store)
    finally:
        await leases.aclose()
        await store.aclose()


async def test_near_the_budget_end_a_lease_is_one_request(backend: Backend, tmp_path: Path) -> None:
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal", max_age_s=30)
    try:
        await make_budget(store, Scope.KEY, "end", 3 * CENT + CENT // 2)
        budgets = ((Scope.KEY, "end"),)
        decisions = []
        for i in range(5):
            decision = await leases.reserve(reservation(f"end-{i}", CENT, budgets, deadline_at=1e12))
            decisions.append(decision)
            if decision is None:
                await leases.settle(settlement(f"end-{i}", CENT))
        assert [d is None for d in decisions] == [True, True, True, False, False]
        denied = decisions[3]
        assert isinstance(denied, Denied) and denied.spec.limit_nano == 3 * CENT + CENT // 2
        await leases.flush()
        assert await spend_of(store, Scope.KEY, "end") == (3 * CENT, 0)
    finally:
        await leases.aclose()
        await store.aclose()


async def test_another_process_is_refused_at_most_one_lease_age(backend: Backend, tmp_path: Path) -> None:
    """One process's lease may hold the whole remaining budget; it goes back within the lease age."""
    first, second = await backend.open(), await backend.open()
    a = LeasedReservations(first, tmp_path / "journal", max_age_s=0.2)
    b = LeasedReservations(second, tmp_path / "journal", max_age_s=0.2)
    a.start()
    try:
        await make_budget(first, Scope.KEY, "share", 4 * CENT)
        budgets = ((Scope.KEY, "share"),)
        assert await a.reserve(reservation("a-0", CENT, budgets, deadline_at=1e12)) is None  # leases 4 ¢
        await a.settle(settlement("a-0", CENT))
        assert isinstance(await b.reserve(reservation("b-0", CENT, budgets, deadline_at=1e12)), Denied)
        await asyncio.sleep(0.5)  # a's lease retires after 0.2 s and gives back the 3 ¢ it did not use
        assert await b.reserve(reservation("b-1", CENT, budgets, deadline_at=1e12)) is None
        await b.settle(settlement("b-1", CENT))
        await b.flush()
        assert await spend_of(first, Scope.KEY, "share") == (2 * CENT, 0)
    finally:
        await a.aclose()
        await b.aclose()
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize(
    ("storage", "journal"),
    [
        ("{database: 'sqlite:///{db}', reservations: leased}", "{db}.leases"),
        ("{database: 'sqlite:///{db}', reservations: leased, lease_journal: '{tmp}/j'}", "{tmp}/j"),
        ("{database: env:DB, reservations: leased}", "{tmp}/home/leases-"),
    ],
)
async def test_config_turns_leases_on_with_their_journal(tmp_path: Path, storage: str, journal: str) -> None:
    """``storage.reservations: leased``: from the config file to the admission's reservations."""
    db = tmp_path / "ledger.db"

    def fill(text: str) -> str:
        return text.replace("{db}", str(db)).replace("{tmp}", str(tmp_path))

    text = "embedded_models: false\ncloud_models_from_env: false\nstorage: " + fill(storage) + "\n"
    env = {"DB": "postgresql://app:s3cret@db.internal:5433/ledger", "MODELYARD_HOME": str(tmp_path / "home")}
    config = load_config(text, source="x.yaml", environ=env)
    assert config.lease_journal_dir.startswith(fill(journal))
    assert "s3cret" not in config.lease_journal_dir  # the PostgreSQL directory never names the password
    state = AppState.build(config)
    try:
        assert isinstance(state.admission.reservations, LeasedReservations)
        assert state.admission.reservations._journal.directory == Path(config.lease_journal_dir)
    finally:
        await state.session.close()


async def test_per_request_stays_the_default(tmp_path: Path) -> None:
    config = load_config(
        "embedded_models: false\ncloud_models_from_env: false\n", source="x.yaml", environ={}
    )
    assert config.storage.reservations == "per_request"
    state = AppState.build(config)
    try:
        assert isinstance(state.admission.reservations, DirectReservations)
    finally:
        await state.session.close()


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("{reservations: pooled}", r"reservations[\s\S]*'per_request' or 'leased'"),
        ("{lease_max_age_s: 0}", r"lease_max_age_s[\s\S]*greater than 0"),
        ("{lease_max_age_s: 600}", r"lease_max_age_s[\s\S]*less than or equal to 60"),
    ],
)
def test_bad_lease_settings_are_config_errors(storage: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(f"storage: {storage}\n", source="x.yaml", environ={})


async def test_a_busy_key_gets_its_next_lease_before_this_one_ends(backend: Backend, tmp_path: Path) -> None:
    """No request waits for a lease commit in steady traffic: the next lease is taken ahead."""
    now = [0.0]
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal", max_age_s=0.5, clock=lambda: now[0])
    try:
        await make_budget(store, Scope.KEY, "ahead", 100 * USD)
        budgets = ((Scope.KEY, "ahead"),)
        for i in range(3):
            assert await leases.reserve(reservation(f"ahead-{i}", CENT, budgets, deadline_at=1e12)) is None
            await leases.settle(settlement(f"ahead-{i}", CENT // 2))
        assert leases.leases_taken == 1
        now[0] = 0.35  # within two ticks of the lease's end
        await leases.tick()
        await asyncio.gather(*leases._acquiring.values())
        assert leases.leases_taken == 2  # taken ahead, in the background
        now[0] = 0.6
        assert await leases.reserve(reservation("ahead-3", CENT, budgets, deadline_at=1e12)) is None
        assert leases.leases_taken == 2  # admitted at once, from the lease taken ahead
        await leases.settle(settlement("ahead-3", CENT // 2))
        await leases.flush()
        assert await spend_of(store, Scope.KEY, "ahead") == (4 * (CENT // 2), 0)
    finally:
        await leases.aclose()
        await store.aclose()


async def test_a_lease_three_quarters_used_has_its_successor_taken_ahead(
    backend: Backend, tmp_path: Path
) -> None:
    """A busy key using its lease up before the lease's age ends: once three quarters of it are
    used, the next lease is taken in the background, so the request that finds this one full is
    admitted from the next at once (no wait for a commit)."""
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal", max_age_s=30, clock=lambda: 0.0)
    try:
        await make_budget(store, Scope.KEY, "use", 100 * USD)
        budgets = ((Scope.KEY, "use"),)
        admitted = 0

        async def one() -> None:
            nonlocal admitted
            r = reservation(f"use-{admitted}", CENT, budgets, deadline_at=1e12)
            assert await leases.reserve(r) is None
            admitted += 1

        await one()  # the first lease: 4 requests' maximum
        assert leases.leases_taken == 1
        await one()
        await one()  # 3 of 4 used
        assert leases._acquiring, "the next lease was not asked for at three quarters"
        await asyncio.gather(*leases._acquiring.values())
        assert leases.leases_taken == 2
        await one()  # the first lease was retired when the next one landed: admitted from the next
        assert leases.leases_taken == 2
        for i in range(admitted):
            await leases.settle(settlement(f"use-{i}", CENT // 2))
        await leases.flush()
        assert await spend_of(store, Scope.KEY, "use") == (admitted * (CENT // 2), 0)
    finally:
        await leases.aclose()
        await store.aclose()


HANG_SCENARIO = """
import asyncio, sys
from pathlib import Path
from modelyard.policy.leases import LeasedReservations
from modelyard.store.base import Scope
from modelyard.store.sqlite import SqliteStore
from tests.store._support import CENT, USD, make_budget, reservation

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    await store.open()
    await make_budget(store, Scope.KEY, "k", 100 * USD)
    leases = LeasedReservations(store, Path(sys.argv[2]), max_age_s=30)
    budgets = ((Scope.KEY, "k"),)
    for i in range(4):  # the first lease holds exactly 4: it is now full, its requests in flight
        assert await leases.reserve(reservation(f"r{i}", CENT, budgets, deadline_at=1e12)) is None
    key = next(iter(leases._current))
    # A lease acquisition that finished, its done-callback not yet run (as right after a burst).
    finished = asyncio.create_task(asyncio.sleep(0, result=leases._current[key]))
    await finished
    leases._acquiring[key] = finished
    assert await leases.reserve(reservation("r4", CENT, budgets, deadline_at=1e12)) is None
    print("admitted")

asyncio.run(main())
"""


def test_a_finished_acquisition_not_yet_cleared_cannot_spin_the_loop(tmp_path: Path) -> None:
    """Regression: the 5th request of a full lease met a finished acquisition still registered and
    awaited it forever without yielding, so the gateway stopped answering (seen under a 64-client
    burst). Run in a child process, so a relapse fails by timeout instead of hanging the suite."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", HANG_SCENARIO, str(tmp_path / "l.db"), str(tmp_path / "journal")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "admitted", done.stderr[-2000:]


async def test_unbudgeted_requests_are_leased_too(backend: Backend, tmp_path: Path) -> None:
    """``durable_admission: always`` with leases: a request no budget applies to (anonymous, free)
    still gets its admission journaled and its ledger row written when its lease settles."""
    store = await backend.open()
    leases = LeasedReservations(store, tmp_path / "journal", max_age_s=30)
    try:
        for i in range(3):
            anon = reservation(f"anon-{i}", 0, (), key_id=None, deadline_at=1e12)
            assert await leases.reserve(anon) is None
            await leases.settle(settlement(f"anon-{i}", 0, key_id=None))
        assert leases.leases_taken == 1
        await leases.flush()
        assert set(await ledger_ids(store)) == {"anon-0", "anon-1", "anon-2"}
        assert await raw(backend, "SELECT COUNT(*) FROM {t}reservations WHERE status = 'pending'") == [(0,)]
    finally:
        await leases.aclose()
        await store.aclose()

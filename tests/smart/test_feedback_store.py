"""Decisions and feedback in the store (SQLite, and PostgreSQL when MODELYARD_TEST_POSTGRES_DSN is
set): written, found, replaced, purged, and replayed into fresh bandits after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modelyard.store._feedback_sql import DecisionRow, FeedbackRow
from tests.smart._decide import build
from tests.store._support import Backend

CONFIG = """\
embedded_models: false
cloud_models_from_env: false
models:
  - {name: small, deployments: [{provider: fake, model: echo, tags: [local], hardware: {usd_per_hour: 0}}]}
  - name: big
    deployments: [{provider: fake, model: echo, pricing: {input_per_mtok: 3, output_per_mtok: 15}}]
routes:
  auto:
    candidates: [small, big]
    quality: {small: 0.6, big: 0.9}
    quality_target: 0.7
    bandit: {exploration: 0}
"""


def decision(request_id: str, at: float, model: str = "small") -> DecisionRow:
    return DecisionRow(
        request_id, at, "key1", "team1", "auto", model, "", "target", "q=0.9", False, ("r(email)",)
    )


def test_decisions_and_feedback_round_trip(backend: Backend) -> None:
    async def run() -> None:
        store = await backend.open()
        try:
            rows = [decision("req_a", 100.0), decision("req_b", 200.0, "big")]
            assert await store.write_route_decisions(rows) == 2
            await store.write_route_decisions(rows[:1])  # written twice: kept once
            assert await store.route_decision("req_a") == rows[0]
            assert await store.route_decision("req_zzz") is None
            first = FeedbackRow(
                "req_a", 300.0, "key1", 1.0, "up", "nice", {"k": [1, 2]}, "auto", "small", "", "target"
            )
            await store.put_feedback(first)
            replaced = FeedbackRow(
                "req_a", 301.0, "key1", 0.25, None, None, {}, "auto", "small", "", "target"
            )
            await store.put_feedback(replaced)
            assert await store.feedback(request_id="req_a") == [replaced]
            await store.put_feedback(FeedbackRow("req_b", 302.0, None, 0.0, "down"))
            assert [f.request_id for f in await store.feedback()] == ["req_a", "req_b"]
            assert [f.request_id for f in await store.feedback(since=301.5)] == ["req_b"]
            assert await store.purge_route_decisions(150.0) == 1
            assert (
                await store.route_decision("req_a") is None
                and await store.route_decision("req_b") is not None
            )
        finally:
            await store.aclose()

    asyncio.run(run())


def test_bandits_are_rebuilt_from_stored_feedback(backend: Backend, tmp_path: Path) -> None:
    config = tmp_path / "modelyard.yaml"
    config.write_text(CONFIG)

    async def run() -> None:
        store = await backend.open()
        try:
            smart, _ = build(config, tmp_path / "unused.db")
            smart._store = store  # the backend under test
            for index in range(6):
                await store.put_feedback(
                    FeedbackRow(
                        f"req_{index}", float(index), None, 1.0, "up", None, {}, "auto", "small", "", "x"
                    )
                )
            await store.put_feedback(
                FeedbackRow("req_gone", 9.0, None, 0.0, None, None, {}, "old-route", "m", "", "x")
            )
            assert smart.routes["auto"].bandit.choose("", ["small", "big"], {"big": 1.0}, 0.7).model == "big"
            assert await smart.rebuild() == 6  # the row of a route no longer configured is skipped
            assert (
                smart.routes["auto"].bandit.choose("", ["small", "big"], {"big": 1.0}, 0.7).model == "small"
            )
        finally:
            await store.aclose()

    asyncio.run(run())


def test_replicas_learn_each_others_feedback_once(backend: Backend, tmp_path: Path) -> None:
    """Two gateways on one database: feedback given to one reaches the other's bandit at its next
    sync — once, and a replaced score is corrected there too."""
    config = tmp_path / "modelyard.yaml"
    config.write_text(CONFIG)

    async def run() -> None:
        store = await backend.open()
        try:
            a, _ = build(config, tmp_path / "a.db")
            b, _ = build(config, tmp_path / "b.db")
            a._store = b._store = store
            rows = [
                FeedbackRow(f"req_{i}", 10.0 + i, None, 1.0, "up", None, {}, "auto", "small", "", "x")
                for i in range(5)
            ]
            for row in rows:  # what a's POST /v1/feedback does: store, then learn
                await store.put_feedback(row)
                assert a.learn(row)
            assert await a.sync() == 0  # its own rows are not counted twice
            assert await b.sync() == 5
            assert await b.sync() == 0
            assert a.routes["auto"].bandit.means("") == b.routes["auto"].bandit.means("")
            changed = FeedbackRow("req_0", 20.0, None, 0.0, "down", None, {}, "auto", "small", "", "x")
            await store.put_feedback(changed)
            assert a.learn(changed)
            assert await b.sync() == 1
            arms_a, arms_b = a.routes["auto"].bandit.arms[""], b.routes["auto"].bandit.arms[""]
            assert (
                (arms_a["small"].alpha, arms_a["small"].n)
                == (arms_b["small"].alpha, arms_b["small"].n)
                == (
                    0.6 * 4 + 4,
                    5,
                )
            )
        finally:
            await store.aclose()

    asyncio.run(run())

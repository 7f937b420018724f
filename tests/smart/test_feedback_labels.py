"""Feedback joined with captured prompts into router labels (SQLite, and PostgreSQL when
MODELYARD_TEST_POSTGRES_DSN is set): averaging per prompt and model, what is skipped and counted,
route and time filters, the JSONL export read back as partial labels, and the URL checks."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from modelyard.routing.smart.learned.data import LabelError, for_pair, load_labels, pick_pair
from modelyard.routing.smart.learned.feedback_labels import (
    FeedbackError,
    FeedbackLabels,
    collect,
    parse_since,
    public_url,
    read_feedback_labels,
)
from modelyard.store._feedback_sql import FeedbackRow
from tests.requestlog._rows import request_row
from tests.store._support import Backend


def body(text: str, system: str = "be brief") -> str:
    """A captured request body as the request log stores it (JSON text)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    return orjson.dumps({"model": "auto", "messages": messages}, option=orjson.OPT_INDENT_2).decode()


def feedback(
    request_id: str, at: float, score: float, model: str | None, route: str | None = "auto"
) -> FeedbackRow:
    return FeedbackRow(
        request_id, at, "k1", score, None, None, {}, route, model, "math" if model else None, "target"
    )


async def _fill(backend: Backend) -> FeedbackLabels:
    store = await backend.open()
    try:
        await store.write_requests(
            [
                request_row("r1", prompt=body("What is 2+2?")),
                request_row("r2", prompt=body("What is 2+2?", system="other system, same question")),
                request_row("r3", prompt=body("What is 2+2?")),
                request_row("r4", prompt=body("Prove Fermat's last theorem")),
                request_row("r5", prompt=None),  # capture off
                request_row("r6", prompt=body("x" * 50)[:30] + "\n… [cut: 90 bytes, 30 kept]"),
                request_row("r7", prompt=body("direct request"), model="big", route=None),
                request_row("r8", prompt=body("another route")),
            ]
        )
        rows = [
            feedback("r1", 10.0, 1.0, "small"),
            feedback("r2", 11.0, 0.0, "small"),  # same prompt text: averaged with r1
            feedback("r3", 12.0, 0.75, "big"),
            feedback("r4", 13.0, 0.0, "small"),
            feedback("r5", 14.0, 1.0, "small"),
            feedback("r6", 15.0, 1.0, "small"),
            feedback("r7", 16.0, 1.0, None, route=None),  # no decision: the request log's model
            feedback("r8", 17.0, 1.0, "big", route="other"),
            feedback("r_gone", 18.0, 1.0, "small"),  # its request was purged from the log
        ]
        for row in rows:
            await store.put_feedback(row)
        return await collect(store, "test-db")
    finally:
        await store.aclose()


def test_feedback_becomes_averaged_partial_labels(backend: Backend) -> None:
    found = asyncio.run(_fill(backend))
    assert (found.feedback_rows, found.used, found.no_prompt, found.unreadable_prompt) == (9, 6, 1, 1)
    assert found.no_request == 1 and found.other_route == 0
    assert list(found.prompts) == [
        "What is 2+2?",
        "Prove Fermat's last theorem",
        "direct request",
        "another route",
    ]
    summary = found.summary()
    assert "9 feedback row(s) in test-db: 6 used" in summary
    assert "1 skipped without a captured prompt" in summary and "capture_prompts: true" in summary
    labels = found.label_set()
    assert labels.partial and labels.models == ["big", "small"]  # most scored first; ties by name
    assert labels.scores["small"][0] == 0.5  # thumbs up and down on one prompt text
    assert labels.scores["big"][0] == 0.75
    assert math.isnan(labels.scores["big"][1]) and labels.scores["small"][1] == 0.0
    assert labels.scores["big"][2] == 1.0 and math.isnan(labels.scores["small"][2])
    assert labels.groups[:3] == ["math", "math", ""]
    assert pick_pair(labels, "big", "small") == ("big", "small")
    with pytest.raises(
        LabelError, match="--strong 'gpt-9' is not a model in test-db; its models are: big, small"
    ):
        pick_pair(labels, "gpt-9", "small")


def test_route_and_time_filters(backend: Backend) -> None:
    async def run() -> tuple[FeedbackLabels, FeedbackLabels]:
        await _fill(backend)
        store = await backend.open()
        try:
            return await collect(store, "db", route="other"), await collect(store, "db", since=12.5)
        finally:
            await store.aclose()

    other, late = asyncio.run(run())
    assert other.used == 1 and other.other_route == 8 and list(other.prompts) == ["another route"]
    with pytest.raises(FeedbackError, match="feedback scores only 'big'; the router needs scores for two"):
        other.label_set()
    assert late.feedback_rows == 6 and list(late.prompts) == [
        "Prove Fermat's last theorem",
        "direct request",
        "another route",
    ]


def test_export_reads_back_as_the_same_partial_labels(tmp_path: Path) -> None:
    found = asyncio.run(_fill(Backend("sqlite", str(tmp_path / "m.db"))))
    path = tmp_path / "labels.jsonl"
    path.write_bytes(found.jsonl())
    first = orjson.loads(path.read_bytes().splitlines()[0])
    assert first == {
        "prompt": "What is 2+2?",
        "scores": {"big": 0.75, "small": 0.5},
        "feedback": {"big": 1, "small": 2},
        "group": "math",
    }
    labels = load_labels(path)
    direct = found.label_set()
    assert labels.prompts == direct.prompts and labels.partial
    for model in ("big", "small"):
        np.testing.assert_array_equal(labels.scores[model], direct.scores[model])
    pair = for_pair(labels, "big", "small")
    assert pair.models == ["big", "small"] and len(pair) == 4
    assert pair.mean_score("big") == pytest.approx((0.75 + 1.0 + 1.0) / 3)


def test_nothing_to_learn_from_says_what_to_do(tmp_path: Path) -> None:
    empty = FeedbackLabels("sqlite:///x.db")
    with pytest.raises(FeedbackError, match=r"no feedback in sqlite:///x\.db .*POST /v1/feedback"):
        empty.label_set()
    uncaptured = FeedbackLabels("db", feedback_rows=3, no_prompt=3)
    with pytest.raises(FeedbackError, match=r"3 skipped without a captured prompt.*none has a prompt"):
        uncaptured.jsonl()


def test_database_urls_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(FeedbackError, match=r"no database at .*absent\.db; give the gateway's database"):
        read_feedback_labels(f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()  # looking does not create it
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FeedbackError, match=r"cannot open the database sqlite:///.*junk\.db: "):
        read_feedback_labels(f"sqlite:///{junk}")
    with pytest.raises(FeedbackError, match="neither sqlite:///PATH nor postgresql"):
        read_feedback_labels("mysql://db/x")
    with pytest.raises(
        FeedbackError, match=r"cannot open the database postgresql://me@127\.0\.0\.1:1/x"
    ) as info:
        read_feedback_labels("postgresql://me:s3cret-pw@127.0.0.1:1/x")
    assert "s3cret-pw" not in str(info.value)


def test_since_and_public_url() -> None:
    assert parse_since("7d", now=1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_since("30m", now=100_000.0) == 100_000.0 - 1800
    assert parse_since("2026-11-01") == 1_793_491_200.0
    with pytest.raises(FeedbackError, match="give a duration like 24h"):
        parse_since("last tuesday")
    assert public_url("postgresql://u:pw@db.internal:5432/gw") == "postgresql://u@db.internal:5432/gw"
    assert public_url("sqlite:///tmp/m.db") == "sqlite:///tmp/m.db"


def test_ipw_quality_is_exact_with_complete_labels_and_unbiased_on_a_random_split() -> None:
    from modelyard.routing.smart.learned.partial_eval import ipw_quality

    rng = np.random.default_rng(3)
    n = 4000
    difficulty = rng.random(n)
    strong = (rng.random(n) > 0.3 * difficulty).astype(float)
    weak = (rng.random(n) > difficulty).astype(float)
    scores = difficulty + 0.1 * rng.random(n)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(-scores, kind="stable")[: n // 2]] = True
    truth = float(np.where(chosen, strong, weak).mean())
    assert ipw_quality(scores, strong, weak, 0.5) == pytest.approx(truth)
    half = rng.random(n) < 0.5  # an A/B split: each prompt keeps one model's score
    estimate = ipw_quality(scores, np.where(half, strong, np.nan), np.where(half, np.nan, weak), 0.5)
    assert estimate == pytest.approx(truth, abs=0.03)

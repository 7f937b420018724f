"""``modelyard top`` without a gateway: the ledger window, the statistics and the live loop."""

from __future__ import annotations

import io
from typing import Any

import pytest
import typer
from rich.console import Console, Group
from rich.text import Text

from modelyard import cli_top
from modelyard.cli_top import (
    OVERLAP_S,
    Attempt,
    LedgerWindow,
    TopError,
    parse_window,
    percentile,
    summarize,
)


def row(request: str, attempt: int = 1, *, at: float, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": request,
        "attempt": attempt,
        "model_requested": "m",
        "deployment": "fake/echo",
        "status": "ok",
        "local": False,
        "latency_ms": 10.0,
        "ttft_ms": None,
        "tokens_in": 1,
        "tokens_out": 2,
        "cost_nano": 1000,
        "created_at": at,
    }
    return base | fields


class FakeLedger:
    """Answers ``fetch(since, limit)`` like GET /admin/ledger: rows from ``since``, oldest first."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.rows: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def __call__(self, since: str, limit: int) -> list[dict[str, Any]]:
        self.calls.append(since)
        start = self.now - int(since[:-1]) * 60 if since.endswith("m") else float(since)
        chosen = sorted((r for r in self.rows if r["created_at"] >= start), key=lambda r: r["created_at"])
        return chosen[:limit]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert percentile([1.0, 2.0], 95) == 2.0


def test_parse_window() -> None:
    assert parse_window("15m") == 900 and parse_window("2h") == 7200 and parse_window("1d") == 86400
    for bad in ("15", "0m", "15s", "m", "1.5h"):
        with pytest.raises(typer.BadParameter):
            parse_window(bad)


def test_window_pages_then_fetches_only_new_rows_and_forgets_old_ones() -> None:
    ledger = FakeLedger(now=10_000.0)
    ledger.rows = [row(f"r{i}", at=9_200.0 + i) for i in range(7)]
    window = LedgerWindow(900, page=3)
    window.refresh(ledger, now=10_000.0)
    assert len(window.rows) == 7 and window.complete
    # pages of 3 from "15m", then from each page's last row (inclusive), until a short page
    assert ledger.calls == ["15m", "9202.0", "9204.0", "9206.0"]

    # Later: only rows since the newest seen less the overlap, which brings a row committed late.
    ledger.calls.clear()
    ledger.rows += [row("late", at=9_206.0 - OVERLAP_S / 2), row("new", at=9_950.0)]
    ledger.now = 10_010.0
    window.refresh(ledger, now=10_010.0)
    assert ledger.calls[0] == repr(9_206.0 - OVERLAP_S)
    assert len(window.rows) == 9 and ("late", 1) in window.rows

    # Later still: rows older than the window are forgotten.
    ledger.calls.clear()
    ledger.now = 10_200.0
    window.refresh(ledger, now=10_200.0)
    assert ledger.calls == [repr(9_950.0 - OVERLAP_S)]
    assert set(window.rows) == {("new", 1)}

    # Quiet for longer than the window: ask from the window's start, not from the newest row.
    ledger.calls.clear()
    window.refresh(ledger, now=11_000.0)
    assert ledger.calls == [repr(11_000.0 - 900)] and window.rows == {}


def test_window_stops_after_max_pages_and_says_so() -> None:
    ledger = FakeLedger(now=1_000.0)
    ledger.rows = [row(f"r{i}", at=500.0 + i) for i in range(10)]
    window = LedgerWindow(900, page=2, max_pages=2)
    window.refresh(ledger, now=1_000.0)
    assert not window.complete and len(ledger.calls) == 2


def test_summary_counts_requests_by_their_last_attempt() -> None:
    rows = [
        Attempt.from_row(
            row("a", 1, at=1, status="error", latency_ms=5.0, tokens_in=0, tokens_out=0, cost_nano=0)
        ),
        Attempt.from_row(row("a", 2, at=1, local=True, latency_ms=20.0, ttft_ms=7.0)),
        Attempt.from_row(row("b", at=2, status="client_disconnect", latency_ms=1.0)),
        Attempt.from_row(row("c", at=3, status="timeout", model_requested="n", latency_ms=30.0)),
    ]
    models, total = summarize(rows)
    by_name = {m.model: m for m in models}
    m = by_name["m"]
    assert (m.requests, m.errors, m.local) == (2, 0, 1)  # a client disconnect is not an error
    assert sorted(m.latencies_ms) == [1.0, 25.0] and m.ttfts_ms == [7.0]
    assert (m.tokens_in, m.tokens_out, m.cost_nano) == (2, 4, 2000)
    assert by_name["n"].errors == 1
    assert [s.model for s in models] == ["m", "n"]  # busiest first
    assert (total.requests, total.errors, total.cost_nano) == (3, 1, 3000)
    assert str(total.cost_usd) == "0.000003"


class FakeSession:
    """Stands in for ``Top``: each ``frame()`` plays the next scripted outcome."""

    url = "http://gw"

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)

    def frame(self) -> Group:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return Group(Text(str(outcome)))


def test_live_keeps_retrying_while_the_gateway_is_down() -> None:
    out = io.StringIO()
    session = FakeSession("frame one", TopError("cannot reach http://gw", retry=True), KeyboardInterrupt())
    cli_top._live(session, Console(file=out, width=120), interval=0.01)  # type: ignore[arg-type]
    text = out.getvalue()
    assert "cannot reach http://gw" in text and "retrying every 0.01 s" in text


def test_live_stops_on_a_key_problem(capsys: pytest.CaptureFixture[str]) -> None:
    session = FakeSession(TopError("403 from /admin/deployments: needs an admin or viewer key", retry=False))
    with pytest.raises(typer.Exit) as info:
        cli_top._live(session, Console(file=io.StringIO()), interval=0.01)  # type: ignore[arg-type]
    assert info.value.exit_code == 1
    assert "needs an admin or viewer key" in capsys.readouterr().err


def test_refused_requests_are_counted_apart_from_models_and_errors() -> None:
    rows = [
        Attempt.from_row(row("ok", at=1)),
        Attempt.from_row(
            row("bad-key", 0, at=2, status="refused", model_requested="", deployment="", cost_nano=0)
        ),
        Attempt.from_row(row("limited", 0, at=3, status="refused", cost_nano=0)),
    ]
    models, total = summarize(rows)
    assert [m.model for m in models] == ["m"]  # no row for the empty model name of a 401
    assert (models[0].requests, models[0].errors) == (1, 0)
    assert (total.requests, total.errors, total.refused) == (1, 0, 2)

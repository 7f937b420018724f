"""RELIABILITY.md rows A1, A3-A7: retries, fallbacks and the retry budget, through the real gateway.

Ledger rows ("each attempt is recorded with its status", "N ledger rows, 0 duplicates") belong to
the ledger issue and are pending; here the attempts are counted where they are visible today: at
the fake upstream and in ``x-modelyard-attempts``.
"""

from __future__ import annotations

import itertools
import math
import time

import anthropic
import openai
import pytest

from tests.reliability.conftest import Rig
from tests.reliability.harness import Result, async_client, chat_body, paced, percentile, raw_load


async def _load(rig: Rig, model: str, n: int, concurrency: int, prefix: str) -> list[Result]:
    """``n`` non-streaming requests over ``concurrency`` raw keep-alive connections."""
    return await raw_load(rig.gateway.url, [chat_body(model, f"{prefix}-{i}") for i in range(n)], concurrency)


async def test_a1_one_upstream_30pct_503(rig: Rig) -> None:
    """A1, scaled: 2,000 requests at concurrency 32 (RELIABILITY.md: 10,000), one of two upstreams
    failing 30 % at random (seeded). 0 failed; upstream attempts ≤ 1.25 × requests; added p99 ≤ 300 ms
    against the same load on a fault-free model. Ledger rows: pending (ledger issue)."""
    n = 2000
    clean = await _load(rig, "a1-clean", n, 32, "a1c")
    faulty = await _load(rig, "a1", n, 32, "a1")
    assert [r.status for r in clean].count(200) == n
    failed = [r for r in faulty if r.status != 200]
    assert not failed, failed[:3]
    upstream = rig.upstream.attempts("flaky503:0.3@a1") + rig.upstream.attempts("ok@a1-good")
    assert upstream <= 1.25 * n, upstream
    # Every attempt the gateway made is one the upstream saw, and the gateway reports each.
    assert sum(r.attempts for r in faulty) == upstream
    added_p99 = percentile([r.elapsed_s for r in faulty], 0.99) - percentile(
        [r.elapsed_s for r in clean], 0.99
    )
    assert added_p99 <= 0.300, added_p99
    print(
        f"A1: {n} requests, 0 failed, upstream attempts {upstream} ({upstream / n:.3f}×), "
        f"added p99 {added_p99 * 1000:.1f} ms"
    )


WINDOW_S = 2.0
"""A3's retry-budget window (``retry.budget_window_s`` of model a3), scaled from 10 s."""


async def test_a3_all_upstreams_503_stays_within_budget(rig: Rig) -> None:
    """A3, scaled: 50 rps for 4 s (200 requests; RELIABILITY.md: 60 s) against one upstream that
    always answers 503, with the retry budget's window scaled to 2 s so its 3/s floor means
    3/s × run time as in the row. Figures: upstream attempts ≤ 1.2 × requests + 3/s × T (T rounded
    up to whole 2 s windows, as the row's 60 s is 6 whole 10 s windows); no request
    > 3 attempts; p99 time-to-error ≤ 1.5 s; each answer a clean 503 carrying the upstream's error."""
    rate, seconds = 50, 4.0
    n = int(rate * seconds)
    started = time.monotonic()
    async with async_client(rig.gateway.url, 64) as client:
        results = await paced(client, "a3", rate, n, "a3")
    run_s = time.monotonic() - started
    assert {r.status for r in results} == {503}
    body = results[0].json["error"]
    assert body["type"] == "api_error" and "overloaded" in body["message"]
    assert max(r.attempts for r in results) <= 3
    upstream = rig.upstream.attempts("fail503@a3")
    assert upstream == sum(r.attempts for r in results)
    floor_s = WINDOW_S * math.ceil(run_s / WINDOW_S)  # the 3/s floor is granted per whole window
    assert upstream <= 1.2 * n + 3 * floor_s, (upstream, run_s)
    p99 = percentile([r.elapsed_s for r in results], 0.99)
    assert p99 <= 1.5, p99
    print(
        f"A3: {n} requests in {run_s:.1f}s, upstream attempts {upstream} "
        f"(bound {1.2 * n + 3 * floor_s:.0f}), max attempts {max(r.attempts for r in results)}, "
        f"p99 time-to-error {p99 * 1000:.0f} ms"
    )


async def test_a3_two_failing_upstreams_still_cap_attempts(rig: Rig) -> None:
    """A3 with two failing upstreams: moving to another upstream is not a retry (§1: "fallback to
    another upstream is still allowed"), so only the per-request cap and time-to-error apply."""
    results = await _load(rig, "a3-two", 100, 32, "a3t")
    assert {r.status for r in results} == {503}
    assert max(r.attempts for r in results) <= 3
    p99 = percentile([r.elapsed_s for r in results], 0.99)
    assert p99 <= 1.5, p99


async def _retry_after_run(
    rig: Rig, model: str, upstream: str, prefix: str, n: int
) -> tuple[list, list[float]]:
    results = await _load(rig, model, n, n, prefix)
    stats = rig.upstream.stats(upstream)
    gaps = []
    for i in range(n):
        times = stats.arrivals_of(f'[{{"role":"user","content":"{prefix}-{i}"}}]')
        assert sum(1 for t in times if t - times[0] <= 1.5) <= 2
        if len(times) > 1:
            gaps.append(times[1] - times[0])
    return results, gaps


async def test_a4_retry_after_honoured_on_the_same_upstream(rig: Rig) -> None:
    """A4 (S01), one upstream: 429 with ``Retry-After: 2`` once per request. 30 concurrent requests
    (within one retry budget: 0.2 × 30 + 30): 30/30 succeed, each retried on the same upstream
    after ≥ 1.8 s, ≤ 2 attempts in the first 1.5 s. The breaker is set out of reach here (1,000
    failures) so that only Retry-After handling is measured; see the next test for the breaker."""
    n = 30
    results, gaps = await _retry_after_run(rig, "a4-retry", "once429:2@a4r", "a4r", n)
    assert [r.status for r in results].count(200) == n, [r.body[:200] for r in results if r.status != 200]
    assert len(gaps) == n and min(gaps) >= 1.8, gaps
    print(f"A4 retry: {n}/{n} ok, min same-upstream gap {min(gaps):.2f}s")


async def test_a4_retry_after_with_default_breaker(rig: Rig) -> None:
    """A4 with the default breaker (5 failures): the 5 concurrent 429s open the breaker while the
    first requests sleep out their Retry-After; they must still be retried (panic mode: never
    eject the last upstream), so 30/30 succeed."""
    n = 30
    results, gaps = await _retry_after_run(rig, "a4-retry-breaker", "once429:2@a4b", "a4b", n)
    assert gaps and min(gaps) >= 1.8
    assert [r.status for r in results].count(200) == n


async def test_a4_429_fails_over_at_once(rig: Rig) -> None:
    """A4 with a second upstream: 100/100 succeed; any retry on the 429 upstream waits ≥ 1.8 s;
    ≤ 2 attempts per request in the first 1.5 s."""
    n = 100
    results = await _load(rig, "a4-failover", n, 32, "a4f")
    assert [r.status for r in results].count(200) == n
    assert max(r.attempts for r in results) <= 2
    stats = rig.upstream.stats("once429:2@a4f")
    for i in range(n):
        times = stats.arrivals_of(f'[{{"role":"user","content":"a4f-{i}"}}]')
        if len(times) > 1:
            assert times[1] - times[0] >= 1.8
    slowest = max(r.elapsed_s for r in results)
    print(f"A4 failover: {n}/{n} ok, slowest {slowest * 1000:.0f} ms")


async def test_a5_persistent_429_backs_off_then_ends_cleanly(rig: Rig) -> None:
    """A5 (S02): 429 without Retry-After, always. 20 concurrent requests: jittered backoff, then a
    clean 429; ≤ 4 attempts in the first 3 s and ≤ 6 in total per request; none outlives the 5 s
    deadline (+1 s). With a fallback model configured, the same fault ends in 200 from the fallback."""
    n = 20
    results = await _load(rig, "a5", n, n, "a5")
    assert {r.status for r in results} == {429}
    assert results[0].json["error"]["type"] == "rate_limit_error"
    assert max(r.elapsed_s for r in results) <= 5 + 1
    stats = rig.upstream.stats("rate429@a5")
    per_request = [stats.arrivals_of(f'[{{"role":"user","content":"a5-{i}"}}]') for i in range(n)]
    assert max(len(t) for t in per_request) <= 6
    assert max(sum(1 for t in times if t - times[0] <= 3) for times in per_request) <= 4
    gaps = [b - a for times in per_request for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 0  # retries are spread by jitter, not a tight loop
    fallback = await _load(rig, "a5-fb", n, n, "a5f")
    assert [r.status for r in fallback].count(200) == n
    assert {r.headers["x-modelyard-route"] for r in fallback} == {"fallback:a5-target"}
    print(
        f"A5: max attempts {max(len(t) for t in per_request)}, "
        f"slowest {max(r.elapsed_s for r in results):.2f}s"
    )


@pytest.mark.parametrize(
    ("model", "upstream", "code"),
    [
        ("a6-ctx", "ctx400@a6c", "context_length_exceeded"),
        ("a6-policy", "policy400@a6p", "content_policy_violation"),
    ],
)
async def test_a6_caller_errors_are_never_retried(rig: Rig, model: str, upstream: str, code: str) -> None:
    """A6 (S12/S13): 100/100 requests get the provider's 400 with its code and message, after
    exactly 1 attempt on that model."""
    n = 100
    results = await _load(rig, model, n, 32, model)
    assert {r.status for r in results} == {400}
    errors = [r.json["error"] for r in results]
    assert {e["code"] for e in errors} == {code}
    assert {e["type"] for e in errors} == {"invalid_request_error"}
    assert all(r.attempts == 1 for r in results)
    stats = rig.upstream.stats(upstream)
    assert stats.attempts == n
    assert all(len(stats.arrivals_of(f'[{{"role":"user","content":"{model}-{i}"}}]')) == 1 for i in range(n))


async def test_a6_no_move_to_another_deployment_and_context_fallback(rig: Rig) -> None:
    """A6: a 400 does not move to the model's other deployment either; a context-length 400 goes to
    the configured ``context_fallback`` (a larger model) after exactly 1 attempt on the small one."""
    results = await _load(rig, "a6-two", 50, 16, "a6t")
    assert {r.status for r in results} == {400}
    assert rig.upstream.attempts("ok@a6t-other") == 0
    moved = await _load(rig, "a6-ctx-fb", 50, 16, "a6cf")
    assert {r.status for r in moved} == {200}
    assert {r.json["model"] for r in moved} == {"ok@a6-big"}
    assert rig.upstream.attempts("ctx400@a6cf") == 50


def test_a6_sdks_see_the_provider_error(rig: Rig) -> None:
    """A6 through the official SDKs: OpenAI raises BadRequestError with the provider's code;
    Anthropic (translated) raises BadRequestError too."""
    with openai.OpenAI(
        base_url=rig.gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10
    ) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="a6-ctx", messages=[{"role": "user", "content": "sdk"}])
        assert caught.value.code == "context_length_exceeded"
    with anthropic.Anthropic(base_url=rig.gateway.url, api_key="unused", max_retries=0, timeout=10) as client:
        with pytest.raises(anthropic.BadRequestError) as err:
            client.messages.create(
                model="a6-policy", max_tokens=16, messages=[{"role": "user", "content": "sdk"}]
            )
        assert "safety system" in str(err.value)


@pytest.mark.parametrize(
    ("model", "bad"),
    [("a7-reset", "proxy:reset_peer"), ("a7-refused", "closed port"), ("a7-upreset", "ok@a7u-good")],
)
async def test_a7_reset_and_refused_are_retried_transparently(rig: Rig, model: str, bad: str) -> None:
    """A7 (S05): 1,000 requests per fault at concurrency 32: a TCP
    reset before headers (proxy ``reset_peer``; the fake closing the connection) or a refused
    connection (closed port). All succeed, ≤ 2 attempts each."""
    n = 1000
    results = await _load(rig, model, n, 32, model)
    assert [r.status for r in results].count(200) == n, [r.body[:200] for r in results if r.status != 200][:3]
    assert max(r.attempts for r in results) <= 2
    if bad.startswith("proxy"):
        assert rig.proxies["reset_peer"].accepted >= 1


async def test_a7_same_upstream_retry_after_a_500(rig: Rig) -> None:
    """A7's transparent retry on a single upstream: a 500 once per request is retried after
    backoff on the same upstream (within the budget); 20/20 succeed with exactly 2 attempts."""
    results = await _load(rig, "a7-once", 20, 20, "a7o")
    assert [r.status for r in results].count(200) == 20
    assert {r.attempts for r in results} == {2}
    assert {r.headers["x-modelyard-route"] for r in results} == {"retry"}

"""RELIABILITY.md rows A10-A13: what a stream looks like to the client when the upstream cuts,
stalls, garbles or trickles after the commit point.

Ledger parts are pending the ledger issue: A10's 1,000 rows with ``completion_tokens`` = tokens
relayed and ``status=upstream_cut``, A12's "usage recorded in 100 %". Here: what the client and
the upstream see.
"""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.reliability.conftest import IDLE_S, Rig
from tests.reliability.fault_upstream import expected_text
from tests.reliability.harness import (
    async_client,
    bounded,
    chat_body,
    eventually,
    key_of,
    post_chat,
    sse_data,
)


def _openai(rig: Rig) -> openai.OpenAI:
    return openai.OpenAI(base_url=rig.gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def _anthropic(rig: Rig) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=rig.gateway.url, api_key="unused", max_retries=0, timeout=10)


def _truncated_success(events: list[bytes]) -> bool:
    """A stream that looks complete to a client although its upstream was cut."""
    if not events:
        return False
    last = events[-1]
    return last == b"[DONE]" or b'"finish_reason":"stop"' in b"".join(events) or b'"error"' not in last


def _tokens(events: list[bytes]) -> int:
    return sum(1 for e in events if b'"content":"t' in e)


async def test_a10_cut_stream_is_never_a_success(rig: Rig) -> None:
    """A10 (S08), scaled: 300 streams at concurrency 32 (RELIABILITY.md: 1,000), each cut after 40
    of 60 tokens with no terminator. Figures: 0 truncated successes (the last event is an error,
    there is no ``[DONE]`` and no ``finish_reason: "stop"``); all 40 tokens relayed; upstream
    attempts = 1 per request (no retry after the first byte)."""
    n = 300
    async with async_client(rig.gateway.url, 32) as client:
        jobs = [post_chat(client, chat_body("a10", f"a10-{i}", stream=True)) for i in range(n)]
        results = await bounded(32, jobs)
    assert {r.status for r in results} == {200}
    streams = [sse_data(r.body) for r in results]
    truncated = sum(1 for events in streams if _truncated_success(events))
    assert truncated == 0
    assert all(orjson.loads(events[-1])["error"]["type"] == "api_error" for events in streams)
    assert {_tokens(events) for events in streams} == {40}
    stats = rig.upstream.stats("cut:40:60@a10")
    assert stats.attempts == n
    assert all(len(stats.arrivals_of(key_of(f"a10-{i}"))) == 1 for i in range(n))
    print(f"A10: 0 truncated successes of {n}, 40 tokens relayed each, {stats.attempts} upstream attempts")


def test_a10_sdks_see_an_error_not_a_clean_end(rig: Rig) -> None:
    """A10 through the official SDKs: the OpenAI SDK raises ``APIError`` after the 40 tokens and
    never sees ``finish_reason``; the Anthropic SDK (translated stream) raises on ``event: error``."""
    with _openai(rig) as client:
        text, finishes = [], []
        stream = client.chat.completions.create(
            model="a10", messages=[{"role": "user", "content": "a10-sdk"}], stream=True
        )
        with pytest.raises(openai.APIError):
            for chunk in stream:
                for choice in chunk.choices:
                    text.append(choice.delta.content or "")
                    finishes.append(choice.finish_reason)
        assert "".join(text) == expected_text(40)
        assert set(finishes) == {None}
    with _anthropic(rig) as client:
        seen = []
        with (
            pytest.raises(anthropic.APIStatusError),
            client.messages.stream(
                model="a10", max_tokens=100, messages=[{"role": "user", "content": "a10-sdk-an"}]
            ) as stream,
        ):
            for event in stream:
                seen.append(event.type)
        assert "message_stop" not in seen
    assert rig.upstream.attempts("cut:40:60@a10") >= 2


def test_a10_clean_eof_without_done_is_an_error(rig: Rig) -> None:
    """A10's other shape of a cut (Portkey-AI/gateway#1797): the upstream's body ends cleanly after
    40 of 60 tokens with neither ``finish_reason`` nor ``[DONE]``. The OpenAI SDK must see an error,
    not a clean end of a 40-token answer."""
    with _openai(rig) as client:
        stream = client.chat.completions.create(
            model="a10-eof", messages=[{"role": "user", "content": "a10-eof"}], stream=True
        )
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass


def test_a10_clean_eof_without_done_anthropic_client(rig: Rig) -> None:
    """The same early clean EOF seen through the Anthropic SDK (OpenAI upstream, translated): the
    SDK must raise, not return a 40-token message with ``stop_reason: "end_turn"``."""
    with (
        _anthropic(rig) as client,
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model="a10-eof", max_tokens=100, messages=[{"role": "user", "content": "a10-eof-an"}]
        ) as stream,
    ):
        stream.get_final_message()


async def test_a11_stall_ends_with_an_error_and_leaks_nothing(rig: Rig) -> None:
    """A11 (S09): 20 concurrent streams stall after 20 tokens; idle timeout 1 s (5 s in
    RELIABILITY.md). Figures: each ends ≤ idle + 1 s with an error event and no ``[DONE]``; the next
    request succeeds; every stalled upstream connection is closed (0 leaked); fds ≤ baseline + 5."""
    n = 20
    baseline = rig.gateway.quiet_fds()
    async with async_client(rig.gateway.url, n) as client:
        results = await bounded(
            n, [post_chat(client, chat_body("a11", f"a11-{i}", stream=True)) for i in range(n)]
        )
        follow = await post_chat(client, chat_body("a11-next", "after the stall"))
    assert {r.status for r in results} == {200}
    slowest = max(r.elapsed_s for r in results)
    assert slowest <= IDLE_S + 1, slowest
    for r in results:
        events = sse_data(r.body)
        assert _tokens(events) == 20
        assert b"[DONE]" not in events and "stalled" in orjson.loads(events[-1])["error"]["message"]
    assert follow.status == 200
    stats = rig.upstream.stats("stall:20@a11")
    assert await eventually(lambda: stats.in_flight == 0 and len(stats.closes) == n)
    assert rig.gateway.alive()
    fds = rig.gateway.settle_fds(baseline)
    assert fds <= baseline + 5, (baseline, fds)
    print(
        f"A11: {n} stalls ended ≤ {slowest:.2f}s, {len(stats.closes)} upstream closes, fds {baseline}->{fds}"
    )


async def test_a12_missing_done_finalizes_promptly(rig: Rig) -> None:
    """A12 (S11): 100 streams complete with ``finish_reason: "stop"`` but no ``[DONE]``. Figures: no
    crash, the process stays up; each response ends ≤ 1 s after the upstream's EOF. (Usage
    recorded in 100 %: pending the ledger issue.)"""
    n = 100
    ended: list[tuple[int, float]] = []
    async with async_client(rig.gateway.url, 32) as client:

        async def one(i: int) -> None:
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat_body("a12-nodone", f"a12n-{i}", stream=True)
            ) as response:
                assert response.status_code == 200
                body = await response.aread()
            ended.append((i, time.monotonic()))
            assert expected_text(10) == "".join(
                orjson.loads(e)["choices"][0]["delta"].get("content", "")
                for e in sse_data(body)
                if e != b"[DONE]"
            )

        await bounded(32, [one(i) for i in range(n)])
    stats = rig.upstream.stats("nodone:10@a12n")
    lags = [t - stats.ends_of(key_of(f"a12n-{i}"))[0] for i, t in ended]
    assert max(lags) <= 1.0, max(lags)
    assert rig.gateway.alive()
    print(f"A12 missing [DONE]: {n}/{n} finalized, ≤ {max(lags) * 1000:.0f} ms after upstream EOF")


async def test_a12_malformed_event_does_not_crash(rig: Rig) -> None:
    """A12 (S10): a broken event mid-stream. Figures: the process stays up, the stream is finalized
    ≤ 1 s after the upstream's EOF, and the next request succeeds."""
    async with async_client(rig.gateway.url, 8) as client:
        results = await bounded(
            8, [post_chat(client, chat_body("a12-malformed", f"a12m-{i}", stream=True)) for i in range(20)]
        )
        follow = await post_chat(client, chat_body("a11-next", "after malformed"))
    assert {r.status for r in results} == {200}
    assert follow.status == 200
    assert rig.gateway.alive()
    assert max(r.elapsed_s for r in results) <= 1.0


def test_a12_malformed_event_is_skipped_for_anthropic_clients(rig: Rig) -> None:
    """A12 (S10) on the translated path (Anthropic SDK, OpenAI upstream): the broken event is
    dropped (never relayed: the SDK would fail to decode it) and the stream reads to its end, or
    the stream ends with ``event: error``, which the SDK raises. Never a decoding crash."""
    with _anthropic(rig) as client:
        request = {
            "model": "a12-malformed",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "a"}],
        }
        try:
            with client.messages.stream(**request) as stream:
                message = stream.get_final_message()
            assert message.stop_reason is not None
        except anthropic.APIStatusError:
            pass


def test_a12_malformed_event_is_skipped_or_ends_in_an_error(rig: Rig) -> None:
    """A12 (S10) as the OpenAI SDK sees it: either the broken event is skipped (the stream reads to
    the end) or the SDK gets an ``APIError`` event; never an undecodable event."""
    with _openai(rig) as client:
        stream = client.chat.completions.create(
            model="a12-malformed", messages=[{"role": "user", "content": "a12-sdk"}], stream=True
        )
        try:
            for _ in stream:
                pass
        except openai.APIError:
            pass


@pytest.mark.parametrize("mode", ["bandwidth", "slicer"])
async def test_a13_slow_network_reassembles_exactly(rig: Rig, mode: str) -> None:
    """A13: the upstream's bytes reach the gateway at 1 KB/s (``bandwidth``) or one byte per write
    (``slicer``). 20 concurrent streams plus 5 non-streams. Figures: 100 % byte-identical payloads
    (against the same answer fetched directly); gateway CPU ≤ 50 % of one core meanwhile."""
    n = 20
    async with async_client(rig.gateway.url, n + 5) as client:
        direct = await post_chat(client, chat_body("a13-direct", "a13", stream=True))
        reference = [e.replace(b"ok:8@a13d", b"MODEL") for e in sse_data(direct.body)]
        cpu_before, started = rig.gateway.cpu_s(), time.monotonic()
        jobs = [
            post_chat(client, chat_body(f"a13-{mode}", f"a13-{mode}-{i}", stream=i < n)) for i in range(n + 5)
        ]
        results = await bounded(n + 5, jobs)
        cpu = (rig.gateway.cpu_s() - cpu_before) / (time.monotonic() - started)
    tag = b"ok:8@a13b" if mode == "bandwidth" else b"ok:8@a13s"
    assert {r.status for r in results} == {200}
    for r in results[:n]:
        assert [e.replace(tag, b"MODEL") for e in sse_data(r.body)] == reference
    for r in results[n:]:
        assert r.json["choices"][0]["message"]["content"] == expected_text(8)
    assert cpu <= 0.5, cpu
    print(
        f"A13 {mode}: {n} streams + 5 byte-identical, "
        f"slowest {max(r.elapsed_s for r in results):.1f}s, gateway CPU {cpu:.0%}"
    )


def test_a13_proxy_really_throttles(rig: Rig) -> None:
    """The bandwidth toxic is real: one ~1.7 KB stream at 1 KB/s takes over a second."""
    started = time.monotonic()
    response = httpx.post(
        rig.gateway.url + "/v1/chat/completions",
        json=chat_body("a13-bandwidth", "x", stream=True),
        timeout=10,
    )
    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0

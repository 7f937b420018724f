"""One rig for the whole directory: the fault upstream, the fault proxies in front of it, and one
real gateway process whose config carries every scenario as its own model.

Each test talks to its own models, so breaker, retry-budget and penalty state never leak from one
test into another. Upstream model names say which fault each deployment meets (see
:mod:`tests.reliability.fault_upstream`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.fault_upstream import FaultUpstream
from tests.reliability.harness import (
    BackgroundLoop,
    Gateway,
    config_yaml,
    deployment,
    free_port,
    model_entry,
    run_gateway,
)

BREAKER_SCALED = {"base_open_s": 1, "max_open_s": 10}
"""A2's breaker in seconds instead of tens of seconds (Envoy's 30 s base scaled by 1/30)."""
TTFB_S = 1.0
"""The time-to-first-byte limit the timeout rows use (A8, A9): 1 s instead of 10-30 s."""
IDLE_S = 1.0
"""The inter-chunk idle limit of A11 (5 s in RELIABILITY.md)."""
PROXY_MODES = ("reset_peer", "blackhole", "bandwidth", "slicer")


@dataclass
class Rig:
    upstream: FaultUpstream
    proxies: dict[str, FaultProxy]
    gateway: Gateway


def scenarios(up: str, proxy: dict[str, FaultProxy], closed_port: int) -> list[dict[str, Any]]:
    """Every model the reliability tests use, by the row that uses it."""

    def d(model: str, **fields: Any) -> dict[str, Any]:
        return deployment(up, model, **fields)

    def via(mode: str, model: str, **fields: Any) -> dict[str, Any]:
        return deployment(proxy[mode].base_url(), model, **fields)

    local = {"max_concurrency": 1, "tags": ["local"]}
    m = model_entry
    return [
        # A1: one of two upstreams 30 % 503, and the same shape without faults for the p99 baseline.
        m("a1", [d("flaky503:0.3@a1"), d("ok@a1-good")]),
        m("a1-clean", [d("ok@a1c-1"), d("ok@a1c-2")]),
        # A2: a flapping primary in the same model (tiers) and behind a model-level fallback.
        m("a2", [d("switch:a2@a2", priority=0), d("ok@a2-fb", priority=1)], breaker=BREAKER_SCALED),
        m("a2-m", [d("switch:a2m@a2m")], breaker=BREAKER_SCALED, fallbacks=["a2-m-fb"]),
        m("a2-m-fb", [d("ok@a2m-fb")]),
        # A3: everything fails.
        m("a3", [d("fail503@a3")], retry={"budget_window_s": 2}),
        m("a3-two", [d("fail503@a3-x"), d("fail503@a3-y")]),
        # A4 / A5: 429 with and without Retry-After.
        m("a4-retry", [d("once429:2@a4r")], breaker={"consecutive_failures": 1000}),
        m("a4-retry-breaker", [d("once429:2@a4b")]),
        m("a4-failover", [d("once429:2@a4f"), d("ok@a4f-good")]),
        m("a5", [d("rate429@a5")], deadline_s=5),
        m("a5-fb", [d("rate429@a5f")], deadline_s=5, fallbacks=["a5-target"]),
        m("a5-target", [d("ok@a5-target")]),
        # A6: caller errors are never retried; a context error may go to a larger model.
        m("a6-ctx", [d("ctx400@a6c")]),
        m("a6-policy", [d("policy400@a6p")]),
        m("a6-two", [d("ctx400@a6t", priority=0), d("ok@a6t-other", priority=1)]),
        m("a6-ctx-fb", [d("ctx400@a6cf")], context_fallback="a6-big"),
        m("a6-big", [d("ok@a6-big")]),
        # A7: reset before headers, refused connections.
        m("a7-reset", [via("reset_peer", "ok@a7r"), d("ok@a7r-good")]),
        m("a7-refused", [deployment(f"http://127.0.0.1:{closed_port}/v1", "ok@a7x"), d("ok@a7x-good")]),
        m("a7-upreset", [d("reset@a7u"), d("ok@a7u-good")]),
        # The breaker is out of reach: see test_a4_retry_after_with_default_breaker for why.
        m("a7-once", [d("once500@a7o")], breaker={"consecutive_failures": 1000}),
        # A8: black holes (the fake's and the proxy's), A9: slow first token.
        m("a8", [d("blackhole@a8", ttfb_timeout_s=TTFB_S, timeout_s=TTFB_S), d("ok@a8-good", priority=1)]),
        m(
            "a8-proxy",
            [
                via("blackhole", "ok@a8p", ttfb_timeout_s=TTFB_S, timeout_s=TTFB_S),
                d("ok@a8p-good", priority=1),
            ],
        ),
        m(
            "a9",
            [d("slow:2000@a9", ttfb_timeout_s=TTFB_S, timeout_s=TTFB_S, max_concurrency=128)],
            fallbacks=["a9-fb"],
        ),
        m("a9-fb", [d("ok@a9-fb")]),
        # A10-A12: cut, clean-but-early end, stall, malformed event, missing [DONE].
        m("a10", [d("cut:40:60@a10")]),
        m("a10-eof", [d("eof:40:60@a10e")]),
        m("a11", [d("stall:20@a11", idle_timeout_s=IDLE_S)]),
        m("a11-next", [d("ok@a11-next")]),
        m("a12-malformed", [d("malformed:3:10@a12m")]),
        m("a12-nodone", [d("nodone:10@a12n")]),
        # A13: slow networks.
        m("a13-direct", [d("ok:8@a13d")]),
        m("a13-bandwidth", [via("bandwidth", "ok:8@a13b")]),
        m("a13-slicer", [via("slicer", "ok:8@a13s")]),
        # A14: hedging a slow primary.
        m("a14", [d("slow:2000@a14", priority=0), d("ok@a14-fast", priority=1)], hedge_after_s=0.3),
        m(
            "a14-budget",
            [d("slow:1000@a14b", priority=0), d("ok@a14b-fast", priority=1)],
            hedge_after_s=0.2,
            retry={"budget_window_s": 2},
        ),
        # A15 and spill-over: a concurrency-1 local model.
        m("a15", [d("sem1:150@a15", **local)]),
        m(
            "spill",
            [d("sem1:300@spill-local", **local, max_queue=0, priority=0), d("ok@spill-cloud", priority=1)],
        ),
        # B1 and B5 (B3 runs on a gateway of its own, see test_clients.py).
        m("b1", [d("ok:100:20@b1")]),
        m("b1-stall", [d("stall:3@b1s")]),
        m("b5", [d("fail503@b5")], fallbacks=["b5-fb"]),
        m("b5-fb", [d("ok@b5-fb")]),
    ]


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = BackgroundLoop("reliability-fakes")
    upstream = FaultUpstream(loop).start()
    proxies = {mode: FaultProxy(loop, upstream.port, mode).start() for mode in PROXY_MODES}
    workdir: Path = tmp_path_factory.mktemp("reliability")
    text = config_yaml(scenarios(upstream.base_url, proxies, free_port()))
    try:
        with run_gateway(workdir, text) as gateway:
            yield Rig(upstream, proxies, gateway)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        upstream.stop()
        loop.close()

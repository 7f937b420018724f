"""Prompt-cache affinity: a conversation stays on the deployment that served it (whose prompt
cache is warm) until that deployment is saturated or down, then comes back; homes expire with the
vendor's cache lifetime; the map stays bounded.

In-process: ChatService → Router → scripted providers (tests/unit/routing/test_router.py's
pattern), so the routing decisions are the production ones."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelyard.api.asgi import Dialect, RequestContext
from modelyard.config import load_config
from modelyard.config.schema import AffinityConfig
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent, WireProtocol
from modelyard.providers.fake import FakeProvider
from modelyard.providers.registry import Registry
from modelyard.redact import Redactor
from modelyard.routing import affinity as aff
from modelyard.routing.affinity import AffinityMap, affinity_key, default_ttl_s
from modelyard.routing.chat import ChatService
from modelyard.routing.router import Router


class Held(Provider):
    """Answers like the fake echo; a request whose last user text is ``hold`` waits for ``gate``."""

    def __init__(self, name: str, protocol: WireProtocol = WireProtocol.OPENAI) -> None:
        self.name = name
        self.protocol = protocol
        self.calls = 0
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()
        self._fake = FakeProvider(protocol=protocol)

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        self.calls += 1
        last = body["messages"][-1]["content"]
        if last == "hold":
            self.holding.set()
            await self.gate.wait()
        result = await self._fake.complete({**body, "model": "echo"}, ctx)
        result["model"] = self.name
        return result

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        self.calls += 1
        async for event in self._fake.stream({**body, "model": "echo"}, ctx):
            yield event


THREE = """\
embedded_models: false
models:
  - name: m
    routing: {{affinity: {{{affinity}}}, breaker: {{consecutive_failures: 1}}, max_attempts: 1}}
    deployments:
      - {{provider: fake, model: a, max_concurrency: 1, max_queue: 0{extra_a}}}
      - {{provider: fake, model: b, max_concurrency: 1, max_queue: 0}}
      - {{provider: fake, model: c, max_concurrency: 1, max_queue: 0}}
"""


def build(affinity: str = "mode: prefix", extra_a: str = "") -> tuple[ChatService, Router, dict[str, Held]]:
    config = load_config(THREE.format(affinity=affinity, extra_a=extra_a), environ={})
    registry = Registry(config, session=None, redact=Redactor())  # type: ignore[arg-type]
    router = Router(config, registry)
    providers = {name: Held(name) for name in "abc"}
    for group in router.groups():
        for dep in group.deployments:
            dep.target = dataclasses.replace(dep.target, provider=providers[dep.target.upstream_model])
    return ChatService(router, default_anthropic_max_tokens=64), router, providers


def conversation(turns: int, system: str = "You are terse.", first: str = "hello") -> JSONDict:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": first},
    ]
    for turn in range(1, turns):
        messages += [
            {"role": "assistant", "content": f"answer {turn}"},
            {"role": "user", "content": f"q{turn}"},
        ]
    return {"model": "m", "messages": messages}


def then(body: JSONDict, text: str) -> JSONDict:
    messages = [*body["messages"], {"role": "assistant", "content": "ok"}, {"role": "user", "content": text}]
    return {**body, "messages": messages}


async def ask(chat: ChatService, body: JSONDict, headers: dict[str, str] | None = None) -> RequestContext:
    ctx = RequestContext.new(Dialect.OPENAI, headers or {})
    await chat.complete(WireProtocol.OPENAI, body, ctx)
    return ctx


async def test_a_conversation_stays_home_until_saturated_then_returns() -> None:
    """The issue-7 test: N turns, 3 deployments; max_concurrency reached → elsewhere → back."""
    chat, _router, providers = build()
    first = await ask(chat, conversation(1))
    home = first.deployment
    assert first.route == "primary" and home is not None
    body = conversation(1)
    for turn in range(2, 8):  # six more turns, all on the warm deployment
        body = then(body, f"turn {turn}")
        ctx = await ask(chat, body)
        assert (ctx.deployment, ctx.route) == (home, "affinity"), turn
    home_provider = providers[home.split("/")[1]]
    assert home_provider.calls == 7 and sum(p.calls for p in providers.values()) == 7

    # A long turn holds the home's only slot: the next turn must go elsewhere, at once.
    held = asyncio.create_task(ask(chat, then(body, "hold")))
    await asyncio.wait_for(home_provider.holding.wait(), 5)
    spilled = await ask(chat, then(body, "while busy"))
    assert spilled.deployment != home and spilled.route == "affinity_yield:saturated"

    # Once the slot is free again the conversation returns to its warm deployment.
    home_provider.gate.set()
    assert (await held).deployment == home
    back = await ask(chat, then(body, "after"))
    assert (back.deployment, back.route) == (home, "affinity")


async def test_different_conversations_are_spread_not_pinned_together() -> None:
    chat, router, _ = build()
    homes = {(await ask(chat, conversation(1, first=f"topic {i}"))).deployment for i in range(30)}
    assert len(homes) >= 2
    group = router.group("m")
    assert group.affinity is not None and len(group.affinity) == 30


async def test_a_home_expires_with_its_cache_lifetime() -> None:
    chat, _, _ = build("mode: prefix, ttl_s: 0.15")
    body = conversation(1)
    await ask(chat, body)
    assert (await ask(chat, then(body, "soon"))).route == "affinity"
    await asyncio.sleep(0.2)
    assert (await ask(chat, then(body, "later"))).route == "primary"  # forgotten: balanced afresh


async def test_a_deployment_ttl_overrides_the_model_ttl() -> None:
    _, router, _ = build("mode: prefix, ttl_s: 100", extra_a=", prompt_cache_ttl_s: 7")
    group = router.group("m")
    assert group.affinity is not None
    by_label = {d.target.upstream_model: d for d in group.deployments}
    assert group.affinity.ttl_s(by_label["a"]) == 7 and group.affinity.ttl_s(by_label["b"]) == 100


async def test_conversation_mode_uses_only_explicit_ids() -> None:
    chat, _, _ = build("mode: conversation")
    header = {aff.CONVERSATION_HEADER: "conv-42"}
    first = await ask(chat, {"model": "m", "messages": [{"role": "user", "content": "a"}]}, header)
    for text in ("b", "c", "d"):
        ctx = await ask(chat, {"model": "m", "messages": [{"role": "user", "content": text}]}, header)
        assert (ctx.deployment, ctx.route) == (first.deployment, "affinity")
    plain = await ask(chat, conversation(1))
    assert plain.route == "primary"  # no id, no affinity in this mode
    by_body = {"model": "m", "conversation_id": "conv-42", "messages": [{"role": "user", "content": "e"}]}
    assert (await ask(chat, by_body)).deployment == first.deployment


async def test_a_home_whose_breaker_opens_is_replaced() -> None:
    chat, router, providers = build()
    body = conversation(1)
    home = (await ask(chat, body)).deployment
    assert home is not None
    dep = router.deployment(home)
    assert dep is not None
    dep.breaker.record_failure(asyncio.get_running_loop().time())  # threshold 1: open
    moved = await ask(chat, then(body, "x"))
    assert moved.deployment != home and moved.route == "affinity_yield:down"
    again = await ask(chat, then(body, "y"))
    assert (again.deployment, again.route) == (moved.deployment, "affinity")
    assert providers[home.split("/")[1]].calls == 1


async def test_no_affinity_by_default() -> None:
    chat, router, _ = build("mode: none")
    assert router.group("m").affinity is None
    routes = {(await ask(chat, conversation(1))).route for _ in range(5)}
    assert routes == {"primary"}


# -- the map and the key, directly -----------------------------------------------------------
class _Dep:
    """The few DeploymentState members the map reads."""

    def __init__(
        self, label: str, *, protocol: WireProtocol = WireProtocol.OPENAI, local: bool = False
    ) -> None:
        self.label = label
        self.up = True
        self.free = True
        self.policy = type("P", (), {"priority": 0, "local": local})()
        provider = type("Prov", (), {"protocol": protocol})()
        self.target = type("T", (), {"provider": provider})()

    def available(self, now: float) -> bool:
        return self.up

    def has_free_slot(self) -> bool:
        return self.free


def test_expiry_and_refresh_on_use() -> None:
    a = _Dep("a")
    amap = AffinityMap(AffinityConfig(mode="prefix", ttl_s=10), [a])  # type: ignore[list-item]
    amap.record("k", a, 0.0)  # type: ignore[arg-type]
    assert amap.home("k", 9.9) is a
    amap.record("k", a, 9.9)  # type: ignore[arg-type]  # served again: the cache was refreshed
    assert amap.home("k", 19.8) is a
    assert amap.home("k", 20.0) is None and len(amap) == 0


def test_a_spill_does_not_move_a_live_home_but_an_expired_one_moves() -> None:
    a, b = _Dep("a"), _Dep("b")
    amap = AffinityMap(AffinityConfig(mode="prefix", ttl_s=10), [a, b])  # type: ignore[list-item]
    amap.record("k", a, 0.0)  # type: ignore[arg-type]
    amap.record("k", b, 1.0)  # type: ignore[arg-type]  # served elsewhere while a was busy
    assert amap.home("k", 2.0) is a
    amap.record("k", b, 11.0)  # type: ignore[arg-type]
    assert amap.home("k", 12.0) is b


def test_choose_says_why_it_yields() -> None:
    a, b = _Dep("a"), _Dep("b")
    amap = AffinityMap(AffinityConfig(mode="prefix", ttl_s=10), [a, b])  # type: ignore[list-item]
    assert amap.choose("k", 0.0, set(), [a, b]) == (None, None)  # type: ignore[list-item]
    amap.record("k", a, 0.0)  # type: ignore[arg-type]
    assert amap.choose("k", 1.0, set(), [a, b]) == (a, None)  # type: ignore[list-item]
    a.free = False
    assert amap.choose("k", 1.0, set(), [a, b]) == (None, "saturated")  # type: ignore[list-item]
    a.free, a.up = True, False
    assert amap.choose("k", 1.0, set(), [a, b]) == (None, "down")  # type: ignore[list-item]
    a.up = True
    assert amap.choose("k", 1.0, {"a"}, [a, b]) == (None, "excluded")  # type: ignore[list-item]
    b.policy.priority, a.policy.priority = 0, 1
    assert amap.choose("k", 1.0, set(), [a, b]) == (None, "tier")  # type: ignore[list-item]
    assert amap.snapshot() == {"entries": 1, "hits": 1, "yields": 4, "misses": 1}


def test_the_map_is_bounded_least_recently_used_first() -> None:
    a = _Dep("a")
    amap = AffinityMap(AffinityConfig(mode="prefix", ttl_s=100, max_entries=2), [a])  # type: ignore[list-item]
    amap.record("k1", a, 0.0)  # type: ignore[arg-type]
    amap.record("k2", a, 0.0)  # type: ignore[arg-type]
    amap.choose("k1", 1.0, set(), [a])  # type: ignore[list-item]  # k1 used: k2 is now the oldest
    amap.record("k3", a, 2.0)  # type: ignore[arg-type]
    assert len(amap) == 2 and amap.home("k2", 3.0) is None and amap.home("k1", 3.0) is a


def test_vendor_default_lifetimes() -> None:
    anthropic = _Dep("anthropic/x", protocol=WireProtocol.ANTHROPIC)
    openai = _Dep("openai/x")
    local = _Dep("llamacpp/x", local=True)
    assert default_ttl_s(anthropic) == 300 and default_ttl_s(anthropic, long_cache=True) == 3600  # type: ignore[arg-type]
    assert default_ttl_s(openai) == 300 and default_ttl_s(local) == 600  # type: ignore[arg-type]
    amap = AffinityMap(AffinityConfig(mode="prefix"), [anthropic, openai])  # type: ignore[list-item]
    long_body = {
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    }
    assert amap.ttl_s(anthropic, long_body) == 3600 and amap.ttl_s(anthropic, {"system": "s"}) == 300  # type: ignore[arg-type]
    assert amap.ttl_s(openai, long_body) == 300  # type: ignore[arg-type]  # only Anthropic has the 1h cache


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda b: then(b, "a later turn"), True),
        (lambda b: {**b, "temperature": 0.1}, True),
        (lambda b: {**b, "messages": [{"role": "system", "content": "other"}, *b["messages"][1:]]}, False),
        (lambda b: {**b, "tools": [{"type": "function", "function": {"name": "f"}}]}, False),
        (lambda b: {**b, "messages": [b["messages"][0], {"role": "user", "content": "bye"}]}, False),
    ],
)
def test_the_prefix_key(change: Any, same: bool) -> None:
    config = AffinityConfig(mode="prefix")
    body = conversation(1)
    key = affinity_key(config, body, {})
    assert key is not None and key.startswith("p:")
    assert (affinity_key(config, change(body), {}) == key) is same


def test_explicit_ids_win_and_modes_differ() -> None:
    body = conversation(1)
    prefix, conv, none = AffinityConfig(mode="prefix"), AffinityConfig(mode="conversation"), AffinityConfig()
    assert affinity_key(prefix, body, {"x-modelyard-conversation": "c1"}) == "c:c1"
    assert affinity_key(conv, {**body, "conversation_id": "c2"}, {}) == "c:c2"
    assert (
        affinity_key(conv, body, {}) is None
        and affinity_key(none, body, {"x-modelyard-conversation": "c"}) is None
    )
    anthropic = {
        "model": "m",
        "system": [{"type": "text", "text": "s"}],
        "messages": [{"role": "user", "content": "q"}],
    }
    assert affinity_key(prefix, anthropic, {}) != affinity_key(prefix, {**anthropic, "system": "other"}, {})
    assert affinity_key(prefix, {"model": "m", "messages": "junk"}, {}) is None
    assert orjson.dumps(body)  # the body itself is untouched by keying

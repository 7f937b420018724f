"""Prompt-cache affinity: keep a conversation on the deployment whose prompt cache is warm.

Vendors cache the prefix of a prompt (system prompt, tools, earlier turns) for a few minutes, and a
cached prefix is both cheaper (Anthropic bills cache reads at 10 % of input, OpenAI at 10-50 %) and
faster to the first token. A cache lives on one deployment, so a conversation that wanders between
deployments pays full price and full prefill on every move. This module remembers, per model
group, which deployment last served each conversation (its *home*) and for how long that
deployment's cache can be expected to hold it, and sends the next turn there.

* **The key**: an explicit conversation id (``x-modelyard-conversation`` header, or a top-level
  ``conversation_id`` string) when the caller sends one; else, in ``prefix`` mode, a hash of the
  stable prefix: system prompt, tool definitions and the first ``prefix_user_turns`` user
  message(s). Later turns do not change the key, so the whole conversation shares it.
* **Yielding to load**: the home is used only while it can take the request at once (a free
  concurrency slot, breaker not open, no better priority tier free). Otherwise the request is
  balanced as usual (reason ``affinity_yield:<why>``) and the home is *kept*: its cache is still
  warm, so the next turn returns there once it has room. A home whose breaker opened is replaced
  by whichever deployment serves next.
* **Lifetime**: an entry lives as long as the home's prompt cache is expected to: the
  deployment's ``prompt_cache_ttl_s`` when configured, else the model's ``affinity.ttl_s``, else
  the vendor default (:func:`default_ttl_s`). Each request the home serves refreshes it, as the
  vendors' caches refresh on use.
* **Bounds**: at most ``max_entries`` keys per group, least recently used dropped first; all in
  process memory, touched only from the event loop. Replicas behind a load balancer each learn
  their own map (no network round trip on the hot path; see docs/prompt-cache-affinity.md).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.config.schema import AffinityConfig
from modelyard.providers.base import WireProtocol
from modelyard.routing.deployment import DeploymentState

__all__ = [
    "ANTHROPIC_TTL_1H_S",
    "ANTHROPIC_TTL_S",
    "CONVERSATION_HEADER",
    "LOCAL_TTL_S",
    "OPENAI_TTL_S",
    "AffinityMap",
    "affinity_key",
    "default_ttl_s",
    "wants_long_cache",
]

CONVERSATION_HEADER = "x-modelyard-conversation"
ANTHROPIC_TTL_S = 300.0
"""Anthropic's default ``cache_control`` lifetime: 5 minutes, refreshed each time it is read."""
ANTHROPIC_TTL_1H_S = 3600.0
"""Anthropic's extended lifetime, asked for with ``cache_control: {"ttl": "1h"}``."""
OPENAI_TTL_S = 300.0
"""OpenAI keeps a cached prefix 5-10 minutes after its last use (up to an hour off-peak): the
conservative end."""
LOCAL_TTL_S = 600.0
"""A self-hosted server (llama.cpp slots, vLLM prefix cache) keeps a prefix until other prompts
evict it; 10 minutes unless ``prompt_cache_ttl_s`` says otherwise."""
_MAX_EXPLICIT_ID = 256


def affinity_key(config: AffinityConfig, body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The conversation key of a request, or None (no affinity for it)."""
    if config.mode == "none":
        return None
    explicit = headers.get(CONVERSATION_HEADER) or body.get("conversation_id")
    if isinstance(explicit, str) and explicit:
        return "c:" + explicit[:_MAX_EXPLICIT_ID]
    if config.mode != "prefix":
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    system: list[Any] = [body.get("system")] if body.get("system") is not None else []
    users: list[Any] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer") and not users:
            system.append(message.get("content"))
        elif role == "user":
            users.append(message.get("content"))
            if len(users) >= config.prefix_user_turns:
                break
    if not users and not system:
        return None
    try:
        seed = orjson.dumps([system, body.get("tools"), users])
    except TypeError:  # not JSON (cannot come from the wire); no affinity rather than an error
        return None
    return "p:" + hashlib.blake2b(seed, digest_size=16).hexdigest()


def wants_long_cache(body: Mapping[str, Any]) -> bool:
    """Whether an Anthropic-format request asks for the 1-hour cache on any block."""
    try:
        raw = orjson.dumps([body.get("system"), body.get("tools"), body.get("messages")])
    except TypeError:
        return False
    return b'"ttl":"1h"' in raw


def default_ttl_s(dep: DeploymentState, *, long_cache: bool = False) -> float:
    """The vendor's prompt-cache lifetime for a deployment (see the module docstring)."""
    if dep.policy.local:
        return LOCAL_TTL_S
    if dep.target.provider.protocol is WireProtocol.ANTHROPIC:
        return ANTHROPIC_TTL_1H_S if long_cache else ANTHROPIC_TTL_S
    return OPENAI_TTL_S


@dataclass(slots=True)
class _Home:
    label: str
    expires_at: float


class AffinityMap:
    """One model group's conversation → home deployment memory (bounded, with expiry)."""

    def __init__(
        self,
        config: AffinityConfig,
        deployments: Collection[DeploymentState],
        ttl_overrides: Mapping[str, float] | None = None,
    ) -> None:
        self.config = config
        self._by_label = {d.label: d for d in deployments}
        self._ttl_overrides = dict(ttl_overrides or {})
        self._homes: OrderedDict[str, _Home] = OrderedDict()
        self.hits = 0
        """Requests sent to their home."""
        self.yields = 0
        """Requests whose home could not take them (saturated, down or a better tier free)."""
        self.misses = 0
        """Requests with a key but no live home (new conversations, expired caches)."""

    def __len__(self) -> int:
        return len(self._homes)

    def ttl_s(self, dep: DeploymentState, body: Mapping[str, Any] | None = None) -> float:
        override = self._ttl_overrides.get(dep.label)
        if override is not None:
            return override
        if self.config.ttl_s is not None:
            return self.config.ttl_s
        long_cache = (
            body is not None
            and dep.target.provider.protocol is WireProtocol.ANTHROPIC
            and not dep.policy.local
            and wants_long_cache(body)
        )
        return default_ttl_s(dep, long_cache=long_cache)

    def home(self, key: str, now: float) -> DeploymentState | None:
        """The live home of ``key``, if any (an expired one is forgotten)."""
        entry = self._homes.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._homes[key]
            return None
        return self._by_label.get(entry.label)

    def choose(
        self, key: str, now: float, exclude: Collection[str], deployments: Collection[DeploymentState]
    ) -> tuple[DeploymentState | None, str | None]:
        """(the home, if it can take the request now; else None with why not: ``saturated``,
        ``down``, ``excluded``, ``tier`` or None for no home)."""
        home = self.home(key, now)
        if home is None:
            self.misses += 1
            return None, None
        why: str | None = None
        if home.label in exclude:
            why = "excluded"
        elif not home.available(now):
            why = "down"
        elif not home.has_free_slot():
            why = "saturated"
        elif any(
            d.policy.priority < home.policy.priority
            and d.label not in exclude
            and d.available(now)
            and d.has_free_slot()
            for d in deployments
        ):
            why = "tier"  # a preferred tier has room again: cost and priority come first
        if why is not None:
            self.yields += 1
            return None, why
        self.hits += 1
        self._homes.move_to_end(key)
        return home, None

    def record(
        self, key: str, served: DeploymentState, now: float, body: Mapping[str, Any] | None = None
    ) -> None:
        """``served`` answered a request of ``key``: it becomes (or stays) the home, unless a live
        home elsewhere only yielded for load, whose warm cache the next turn should go back to."""
        entry = self._homes.get(key)
        if entry is not None and entry.label != served.label and entry.expires_at > now:
            home = self._by_label.get(entry.label)
            if home is not None and home.available(now):
                return
        self._homes[key] = _Home(served.label, now + self.ttl_s(served, body))
        self._homes.move_to_end(key)
        while len(self._homes) > self.config.max_entries:
            self._homes.popitem(last=False)

    def snapshot(self) -> dict[str, int]:
        return {"entries": len(self._homes), "hits": self.hits, "yields": self.yields, "misses": self.misses}

"""The context step of routing: does the request fit the window of each candidate deployment, and
if not, what the model's ``context.policy`` does about it.

Called once per chat request after admission (api/inference.py). The hot path stays thin: a
request whose byte-based upper bound (``accounting.cost.prompt_upper_tokens``: a token is at least
one byte) plus its reserved answer fits every candidate's window is never tokenized. Exact counts
of large prompts run in a worker thread.

What happened is recorded on the request context (``ctx.context``), sent as the response header
``x-modelyard-context`` and stored with the request record: ``fit``, ``compressed:<n results>``,
``trimmed:<n messages>``, ``summarized:<n messages>`` (``:cached`` when the summary was reused),
``fallback:<model>``, or ``trimmed:<n>;summarizer-failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import orjson

from modelyard.accounting.cost import (
    IMAGE_TOKENS_UPPER,
    PER_MESSAGE_OVERHEAD_TOKENS,
    PER_REQUEST_OVERHEAD_TOKENS,
    TOOLS_OVERHEAD_TOKENS,
    prompt_upper_tokens,
    requested_max_tokens,
)
from modelyard.api.asgi import RequestContext
from modelyard.config.context_schema import ContextConfig
from modelyard.config.load import RuntimeConfig
from modelyard.errors import GatewayError
from modelyard.providers.base import CallContext, JSONDict, WireProtocol
from modelyard.providers.registry import Target
from modelyard.routing.context.counting import TokenCounter
from modelyard.routing.context.fitting import (
    compress_tool_outputs,
    plan_trim,
    split_turns,
    too_long_error,
    with_summary,
)
from modelyard.routing.context.profiles import (
    Counters,
    CounterSpec,
    DeploymentProfile,
    catalog_windows,
    profile_for,
)
from modelyard.routing.context.summaries import (
    CachedSummary,
    SummaryCache,
    prefix_hashes,
    summary_request,
)
from modelyard.routing.group import ModelGroup
from modelyard.routing.router import Router
from modelyard.translate import anthropic_request_to_openai

__all__ = ["ContextService", "GroupContext", "Summarizer"]

log = logging.getLogger("modelyard.context")

Summarizer = Callable[[JSONDict, RequestContext], Awaitable[str]]
"""Calls the summarizer model with an OpenAI chat body; returns the summary text."""

T = TypeVar("T")
_SUMMARY_OVERHEAD = 24  # the summary's prefix line and message framing, tokens


@dataclass(frozen=True, slots=True)
class GroupContext:
    name: str
    config: ContextConfig
    profiles: tuple[DeploymentProfile, ...]
    """Chat deployments of the model, in the group's order."""
    fallback_chain: tuple[str, ...]
    known: tuple[DeploymentProfile, ...] = ()
    """The profiles whose window is known (the ones fitted)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", tuple(p for p in self.profiles if p.window is not None))


@dataclass(slots=True)
class _Counted:
    tokens: dict[CounterSpec, int] = field(default_factory=dict)


def _protocol_name(protocol: WireProtocol) -> str:
    return "anthropic" if protocol is WireProtocol.ANTHROPIC else "openai"


async def _off(work: Callable[[], T], offload: bool = True) -> T:
    """Run CPU-bound counting in a worker thread (or inline when ``offload`` is false)."""
    if not offload:
        return work()
    return await asyncio.get_running_loop().run_in_executor(None, work)


def upper_bound(body: JSONDict) -> int:
    """A cheap upper bound on a request's prompt tokens: its JSON bytes (every string the model
    reads is in there, and a token is at least one byte), plus the template tokens of each message,
    the tools' system prompt, and an image allowance per image part. About 2 µs for a small chat;
    ``accounting.cost.prompt_upper_tokens`` (a tree walk) is the fallback for odd bodies."""
    try:
        raw = orjson.dumps(body)
    except TypeError:
        return prompt_upper_tokens(body, "openai") + PER_MESSAGE_OVERHEAD_TOKENS
    images = raw.count(b'"type":"image') + raw.count(b'"type":"input_image')
    messages = body.get("messages")
    total = len(raw) + PER_REQUEST_OVERHEAD_TOKENS + images * IMAGE_TOKENS_UPPER
    total += PER_MESSAGE_OVERHEAD_TOKENS * ((len(messages) if isinstance(messages, list) else 0) + 1)
    return total + (TOOLS_OVERHEAD_TOKENS if body.get("tools") else 0)


class ContextService:
    """Token counting and context fitting for every configured model."""

    def __init__(self, config: RuntimeConfig, router: Router) -> None:
        from modelyard.providers.llamacpp import embedded_model_path

        self._router = router
        self.counters = Counters()
        windows = catalog_windows()
        self._groups: dict[str, GroupContext] = {}
        entries = 1
        for model in config.models:
            group = router.group(model.name)
            cfg: ContextConfig = getattr(model, "context", None) or ContextConfig()
            entries = max(entries, cfg.summarize.cache_entries)
            profiles = tuple(
                profile_for(dep, state.label, windows, cfg.tokenizer, embedded_model_path)
                for dep, state in zip(model.deployments, group.deployments, strict=True)
                if state.target.chat
            )
            chain = tuple(cfg.fallback_models) or tuple(
                name for name in (model.routing.context_fallback, *model.routing.fallbacks) if name
            )
            self._groups[group.name] = GroupContext(group.name, cfg, profiles, chain)
        self.summaries = SummaryCache(entries)
        self.summary_calls = 0
        """Summarizer calls made (cache misses that reached the model)."""
        self.summarizer: Summarizer | None = None

    def group_context(self, name: str) -> GroupContext | None:
        return self._groups.get(name)

    # -- counting ---------------------------------------------------------------------------------

    async def _count(self, spec: CounterSpec, body: JSONDict, protocol: WireProtocol, offload: bool) -> int:
        counter = self.counters.loaded(spec)
        if counter is not None and not offload:
            return counter.request(body, protocol)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.counters.get(spec).request(body, protocol))

    async def _counter(self, spec: CounterSpec) -> TokenCounter:
        counter = self.counters.loaded(spec)
        if counter is None:
            counter = await asyncio.get_running_loop().run_in_executor(None, self.counters.get, spec)
        return counter

    def _offload(self, cfg: ContextConfig, upper: int) -> bool:
        return upper > cfg.offload_above_bytes

    async def count_for_target(
        self, target: Target, body: JSONDict, protocol: WireProtocol, request_id: str
    ) -> int:
        """Input tokens of ``body`` for the deployment ``target`` (the count_tokens endpoints).

        A native Anthropic deployment asks Anthropic's own count_tokens (exact, free); every
        other deployment is counted here, with its model's counter.
        """
        provider = target.provider
        upstream_count = getattr(provider, "count_tokens", None)
        native = provider.protocol is WireProtocol.ANTHROPIC and protocol is WireProtocol.ANTHROPIC
        if native and upstream_count is not None:
            upstream = {**body, "model": target.upstream_model}
            return int(await upstream_count(upstream, CallContext(request_id)))
        info = self._groups.get(target.name)
        profile = next((p for p in info.profiles if p.label == target.label), None) if info else None
        spec = profile.counter if profile is not None else CounterSpec("estimate")
        cfg = info.config if info is not None else ContextConfig()
        upper = upper_bound(body)
        if protocol is WireProtocol.ANTHROPIC and spec.kind in ("cl100k", "cl100k-o200k"):
            # An OpenAI model would see the translated request: count that.
            body = anthropic_request_to_openai({**body, "max_tokens": 1})
            protocol = WireProtocol.OPENAI
        return await self._count(spec, body, protocol, self._offload(cfg, upper))

    # -- fitting ----------------------------------------------------------------------------------

    @staticmethod
    def reserve(cfg: ContextConfig, requested: int, window: int) -> int:
        """Room kept for the answer (see ContextConfig.reserve_tokens)."""
        if requested >= 0:
            return min(requested, window // 2)
        if cfg.reserve_tokens is not None:
            return min(cfg.reserve_tokens, window // 2)
        return min(1024, window // 8)

    async def fit(
        self, client: WireProtocol, body: JSONDict, ctx: RequestContext, group: ModelGroup
    ) -> JSONDict:
        """``body`` as it should be sent (maybe trimmed, summarized or re-addressed to a fallback
        model); raises a 400 (``context_length_exceeded``) when the policy cannot make it fit."""
        info = self._groups.get(group.name)
        if info is None or not info.known:
            return body
        cfg = info.config
        proto = _protocol_name(client)
        requested = requested_max_tokens(body, proto, default=-1)  # type: ignore[arg-type]
        upper = upper_bound(body)
        known = info.known
        if all(upper + self.reserve(cfg, requested, p.window or 0) <= (p.window or 0) for p in known):
            ctx.context = "fit"
            return body
        offload = self._offload(cfg, upper)
        counted = await self._count_profiles(known, body, client, offload)
        misfits = self._misfits(cfg, known, counted, requested)
        if not misfits:
            ctx.context = "fit"
            return body
        compressed = 0
        if cfg.tool_outputs.max_tokens is not None:
            tightest = min(misfits, key=lambda p: p.window or 0)
            counter = await self._counter(tightest.counter)
            limit, head = cfg.tool_outputs.max_tokens, cfg.tool_outputs.head_share
            original = body
            body, compressed = await _off(
                partial(compress_tool_outputs, original, client, counter, limit, head), offload
            )
            if compressed:
                counted = await self._count_profiles(known, body, client, offload)
                misfits = self._misfits(cfg, known, counted, requested)
                if not misfits:
                    ctx.context = f"compressed:{compressed}"
                    return body
        policy = cfg.policy
        if policy == "fallback":
            return await self._fallback(info, body, ctx, client, known, misfits, offload)
        tightest = min(misfits, key=lambda p: p.window or 0)
        window = tightest.window or 0
        reserve = self.reserve(cfg, requested, window)
        tokens = counted.tokens[tightest.counter]
        where = f"model {group.name!r} ({tightest.label})"
        if policy == "reject":
            raise too_long_error(
                tokens,
                reserve,
                window,
                where,
                "Shorten the conversation, lower max_tokens, or use a model with a larger window "
                "(this model's context.policy is reject).",
            )
        if policy == "summarize":
            return await self._summarize(info, body, ctx, client, tightest, reserve, tokens, where)
        trimmed, dropped = await self._trim(
            body, client, tightest, window - reserve, cfg.trim_step_turns, offload
        )
        if trimmed is None:
            raise too_long_error(tokens, reserve, window, where, self._cannot_trim_hint())
        ctx.context = f"trimmed:{dropped}"
        return trimmed

    @staticmethod
    def _cannot_trim_hint() -> str:
        return (
            "Even the system prompt, the tool definitions and the last turn alone do not fit; shorten "
            "the last message, lower max_tokens, or set context.tool_outputs.max_tokens to cut long "
            "tool results."
        )

    async def _count_profiles(
        self, profiles: tuple[DeploymentProfile, ...], body: JSONDict, client: WireProtocol, offload: bool
    ) -> _Counted:
        counted = _Counted()
        for profile in profiles:
            if profile.counter not in counted.tokens:
                counted.tokens[profile.counter] = await self._count(profile.counter, body, client, offload)
        return counted

    def _misfits(
        self, cfg: ContextConfig, profiles: tuple[DeploymentProfile, ...], counted: _Counted, requested: int
    ) -> list[DeploymentProfile]:
        out = []
        for p in profiles:
            window = p.window or 0
            if counted.tokens[p.counter] + self.reserve(cfg, requested, window) > window:
                out.append(p)
        return out

    async def _trim(
        self,
        body: JSONDict,
        client: WireProtocol,
        profile: DeploymentProfile,
        budget: int,
        step: int,
        offload: bool,
    ) -> tuple[JSONDict | None, int]:
        counter = await self._counter(profile.counter)

        def run() -> JSONDict | tuple[JSONDict, int] | None:
            plan = plan_trim(body, client, counter, budget, step=step)
            return None if plan is None else (plan.body, plan.dropped)

        result = await asyncio.get_running_loop().run_in_executor(None, run) if offload else run()
        if result is None or not isinstance(result, tuple):
            return None, 0
        return result

    async def _fallback(
        self,
        info: GroupContext,
        body: JSONDict,
        ctx: RequestContext,
        client: WireProtocol,
        known: tuple[DeploymentProfile, ...],
        misfits: list[DeploymentProfile],
        offload: bool,
    ) -> JSONDict:
        cfg = info.config
        requested = requested_max_tokens(body, _protocol_name(client), default=-1)  # type: ignore[arg-type]
        if len(misfits) < len(info.profiles):
            # Another deployment of this model holds it: serve it there.
            ctx.context = "fit"
            ctx.context_exclude = frozenset(p.label for p in misfits)
            return body
        tried = []
        for name in info.fallback_chain:
            try:
                other = self._router.group(name)
            except GatewayError:
                continue
            tried.append(name)
            other_info = self._groups.get(other.name)
            if other_info is None:
                continue
            other_known = other_info.known
            counted = await self._count_profiles(other_known, body, client, offload)
            other_misfits = self._misfits(cfg, other_known, counted, requested)
            if len(other_misfits) < len(other_info.profiles):
                ctx.context = f"fallback:{name}"
                ctx.context_exclude = frozenset(p.label for p in other_misfits)
                return {**body, "model": name}
        tightest = min(misfits, key=lambda p: p.window or 0)
        window = tightest.window or 0
        counted = await self._count_profiles((tightest,), body, client, offload)
        chain = ", ".join(tried) if tried else "none is configured"
        raise too_long_error(
            counted.tokens[tightest.counter],
            self.reserve(cfg, requested, window),
            window,
            f"model {info.name!r} ({tightest.label})",
            f"No larger-context model holds it either (fallback models: {chain}); set "
            "context.fallback_models or routing.context_fallback to a model with a larger window.",
        )

    # -- summarize --------------------------------------------------------------------------------

    def _tenant(self, ctx: RequestContext) -> str:
        key = getattr(ctx.principal, "key", None)
        return str(getattr(key, "team_id", None) or getattr(key, "id", None) or "-")

    async def _summarize(
        self,
        info: GroupContext,
        body: JSONDict,
        ctx: RequestContext,
        client: WireProtocol,
        profile: DeploymentProfile,
        reserve: int,
        tokens: int,
        where: str,
    ) -> JSONDict:
        cfg = info.config.summarize
        window = profile.window or 0
        budget = window - reserve
        counter = await self._counter(profile.counter)
        messages = list(body.get("messages") or [])
        system, turns = split_turns(messages)
        positions = [i for i in range(len(messages)) if i not in set(system)]
        rank = {index: n for n, index in enumerate(positions)}  # message index → non-system rank
        hashes = prefix_hashes(self._tenant(ctx) + "|" + info.name, [messages[i] for i in positions])
        # Fold points: the start of every turn but the first (never past the last turn's start).
        boundaries = [rank[turn[0]] for turn in turns[1:]]
        previous: tuple[int, CachedSummary] | None = None
        for b in reversed(boundaries):
            cached = self.summaries.get(hashes[b - 1])
            if cached is None:
                continue
            candidate = with_summary(body, client, cached.text, positions[b])
            if await _off(partial(counter.request, candidate, client)) <= budget:
                self.summaries.hits += 1
                ctx.context = f"summarized:{b}:cached"
                return candidate
            previous = (b, cached)
            break
        room = budget - cfg.max_summary_tokens - _SUMMARY_OVERHEAD
        plan = await _off(lambda: plan_trim(body, client, counter, room, keep_share=cfg.keep_recent_share))
        if plan is None:
            raise too_long_error(tokens, reserve, window, where, self._cannot_trim_hint())
        folded = plan.dropped  # the oldest non-system messages, whole turns
        if folded <= 0:
            ctx.context = "fit"
            return plan.body
        start, prior = (previous[0], previous[1].text) if previous and previous[0] < folded else (0, None)
        newer = [messages[i] for i in positions[start:folded]]
        try:
            text = await self._call_summarizer(info, prior, newer, ctx)
        except Exception as exc:  # any failure: trim instead, and say so
            message = exc.message if isinstance(exc, GatewayError) else repr(exc)
            log.warning(
                "request %s: summarizing %d turns with %r failed (%s); trimmed instead",
                ctx.request_id,
                folded,
                cfg.model,
                message,
            )
            trimmed = await _off(lambda: plan_trim(body, client, counter, budget))
            if trimmed is None:
                raise too_long_error(tokens, reserve, window, where, self._cannot_trim_hint()) from None
            ctx.context = f"trimmed:{trimmed.dropped};summarizer-failed"
            return trimmed.body
        self.summaries.misses += 1
        self.summaries.put(hashes[folded - 1], CachedSummary(text, folded))
        candidate = with_summary(body, client, text, positions[folded])
        if await _off(lambda: counter.request(candidate, client)) > budget:
            again = await _off(lambda: plan_trim(candidate, client, counter, budget))
            if again is None:
                raise too_long_error(tokens, reserve, window, where, self._cannot_trim_hint())
            candidate = again.body
        ctx.context = f"summarized:{folded}"
        return candidate

    async def _call_summarizer(
        self, info: GroupContext, previous: str | None, newer: list[object], ctx: RequestContext
    ) -> str:
        cfg = info.config.summarize
        if self.summarizer is None:
            raise RuntimeError("no summarizer is attached to the context service")
        max_chars = 32_000
        other = self._groups.get(self._router.group(cfg.model).name)
        if other is not None and other.known:
            window = min(p.window or 0 for p in other.known)
            # ~3 characters a token keeps the transcript inside the summarizer's own window.
            max_chars = max(1000, (window - cfg.max_summary_tokens - 200) * 3)
        request = summary_request(cfg.model, previous, newer, cfg.max_summary_tokens, max_chars)
        self.summary_calls += 1
        async with asyncio.timeout(cfg.timeout_s):
            text = await self.summarizer(request.body, ctx)
        if not text.strip():
            raise RuntimeError("the summarizer returned an empty summary")
        return text

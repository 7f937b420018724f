"""The attempt loop: choose a deployment, call it, and on failure retry or fall back — before the
commit point only.

Rules (see ../shared/RELIABILITY.md §1): at most ``max_attempts`` attempts per request, retries and
fallbacks together; after a retryable failure move at once to a different deployment when one is
available, else retry the same one after full-jitter backoff (or its ``Retry-After``), within its
retry budget and the overall deadline; never retry a caller error (400/401/403/404/422) on the same
model; a context-length error may go to the configured ``context_fallback`` model.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelyard.config.load import ResolvedModel, RuntimeConfig
from modelyard.config.schema import Deployment, LlamaCppDeployment, OnnxEmbeddingsDeployment, OpenAIDeployment
from modelyard.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    UpstreamError,
)
from modelyard.providers.base import JSONDict
from modelyard.providers.registry import Registry, Target
from modelyard.routing.affinity import AffinityMap, affinity_key
from modelyard.routing.backoff import full_jitter, parse_retry_after
from modelyard.routing.balance import Balancer, Strategy
from modelyard.routing.breaker import CircuitBreaker
from modelyard.routing.deployment import DeploymentPolicy, DeploymentState, Saturated
from modelyard.routing.group import ModelGroup, NoCapacity
from modelyard.routing.retry_budget import RetryBudget

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
LOCAL_PRESETS = frozenset({"vllm", "llamacpp-server", "ollama"})


class ServiceUnavailableError(NotReadyError):
    """Every deployment is saturated: a fast 503 with Retry-After rather than an unbounded queue."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class AttemptRecord:
    deployment: str
    outcome: str
    """``ok``, ``retryable``, ``error``, ``timeout`` or ``saturated``."""
    status: int | None
    latency_ms: float
    ended_at: float = field(default_factory=time.time)
    """Unix seconds when the attempt ended (it started ``latency_ms`` earlier)."""


@dataclass(slots=True)
class Execution(Generic[T]):
    result: T
    deployment: DeploymentState
    reason: str
    attempts: list[AttemptRecord] = field(default_factory=list)


def is_retryable(exc: GatewayError) -> bool:
    if isinstance(exc, UpstreamError):
        if exc.upstream_status in (400, 401, 403, 404, 422):
            return False
        return exc.status in RETRYABLE_STATUSES
    return False


def is_context_length_error(exc: GatewayError) -> bool:
    if exc.code == "context_length_exceeded":
        return True
    if isinstance(exc, UpstreamError | InvalidRequestError) and exc.status in (400, 413):
        text = exc.message.lower()
        return "context length" in text or "prompt is too long" in text or "context window" in text
    return False


def policy_for(dep: Deployment) -> DeploymentPolicy:
    """Limits of one deployment, with the documented defaults filled in."""
    local = (
        isinstance(dep, LlamaCppDeployment | OnnxEmbeddingsDeployment)
        or (isinstance(dep, OpenAIDeployment) and dep.preset in LOCAL_PRESETS)
        or "local" in dep.tags
    )
    if dep.max_concurrency is not None:
        concurrency: int | None = dep.max_concurrency
    elif isinstance(dep, LlamaCppDeployment):
        concurrency = dep.workers
    elif isinstance(dep, OpenAIDeployment) or dep.provider == "anthropic":
        concurrency = 64
    else:
        concurrency = None
    queue = dep.max_queue if dep.max_queue is not None else (2 * concurrency if concurrency else 0)
    return DeploymentPolicy(
        priority=dep.priority,
        weight=dep.weight,
        max_concurrency=concurrency,
        max_queue=queue,
        max_queue_wait_s=dep.max_queue_wait_s,
        spill_after_s=dep.spill_after_s,
        cost_per_mtok=dep.cost_per_mtok,
        ttfb_timeout_s=dep.ttfb_timeout_s or (120.0 if local else 30.0),
        idle_timeout_s=dep.idle_timeout_s,
        tags=tuple(dep.tags),
        local=local,
        hardware=dep.hardware,
    )


def sticky_key(mode: str, body: JSONDict) -> str | None:
    if mode == "user":
        user = body.get("user") or (body.get("metadata") or {}).get("user_id")
        return str(user) if user else None
    if mode == "conversation":
        messages = body.get("messages") or []
        first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
        if first is None:
            return None
        seed = repr((body.get("system"), first.get("content")))
        return hashlib.blake2b(seed.encode(), digest_size=12).hexdigest()
    return None


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Router:
    """Model groups with their live deployment state, and the attempt loop over them."""

    def __init__(
        self, config: RuntimeConfig, registry: Registry, *, rng: random.Random | None = None
    ) -> None:
        self._rng = rng or random.Random()
        self._groups: dict[str, ModelGroup] = {}
        self._registry = registry
        for model in config.models:
            group = self._build(model, registry.targets(model.name))
            for name in (model.name, *model.aliases):
                self._groups[name] = group

    def _build(self, model: ResolvedModel, targets: list[Target]) -> ModelGroup:
        routing = model.routing
        states = []
        for dep, target in zip(model.deployments, targets, strict=True):
            breaker = CircuitBreaker(
                threshold=routing.breaker.consecutive_failures,
                base_open_s=routing.breaker.base_open_s,
                max_open_s=routing.breaker.max_open_s,
            )
            budget = RetryBudget(
                ratio=routing.retry.budget_ratio,
                window_s=routing.retry.budget_window_s,
                min_per_s=routing.retry.budget_min_per_s,
            )
            states.append(DeploymentState(target, policy_for(dep), breaker=breaker, budget=budget))
        affinity = None
        if routing.affinity.mode != "none":
            ttls = {
                state.label: dep.prompt_cache_ttl_s
                for dep, state in zip(model.deployments, states, strict=True)
                if dep.prompt_cache_ttl_s is not None
            }
            affinity = AffinityMap(routing.affinity, states, ttls)
        balancer = Balancer(Strategy(routing.strategy), self._rng)
        return ModelGroup(model.name, states, routing, balancer, affinity)

    def group(self, name: object) -> ModelGroup:
        group = self._groups.get(name) if isinstance(name, str) else None
        if group is None:
            self._registry.resolve(name)  # raises the 404 that lists what is served
            raise ModelNotFoundError(f"model {name!r} is not served here")
        return group

    @staticmethod
    def _settle_failure(
        dep: DeploymentState, exc: GatewayError, started: float, attempts: list[AttemptRecord]
    ) -> str:
        """Book a failed attempt: free its slot, tell balancer and breaker; returns its outcome."""
        dep.release()
        retry_after = parse_retry_after(getattr(exc, "retry_after", None), time.time())
        if is_retryable(exc):
            dep.record_failure(time.monotonic(), retry_after_s=retry_after)
            outcome = "timeout" if exc.status in (408, 504) else "retryable"
        else:
            dep.breaker.release_probe()
            outcome = "error"
        attempts.append(
            AttemptRecord(dep.label, outcome, exc.status, round((time.monotonic() - started) * 1000, 2))
        )
        return outcome

    async def _hedged(
        self,
        group: ModelGroup,
        first: DeploymentState,
        call: Callable[[DeploymentState, float], Awaitable[T]],
        per_try: float,
        hedge_after_s: float,
        exclude: set[str],
        key: str | None,
        supports: Callable[[DeploymentState], bool],
        attempts: list[AttemptRecord],
    ) -> tuple[T, DeploymentState]:
        """First attempt with a hedge: if no answer (or first byte) after ``hedge_after_s``, send a
        second attempt to another deployment; the first to succeed wins, the loser is cancelled at
        once and recorded. Hedges come out of the retry budget."""
        started = time.monotonic()
        task_a = asyncio.create_task(_awaited(call(first, per_try)))
        done, _ = await asyncio.wait({task_a}, timeout=hedge_after_s)
        if done:
            return task_a.result(), first
        now = time.monotonic()
        second: DeploymentState | None = None
        try:
            unsupported = {d.label for d in group.deployments if not supports(d)}
            choice = group.select(now, exclude | unsupported | {first.label}, key)
            if not choice.queued and choice.deployment.budget.try_spend(now):
                second = choice.deployment
                await second.acquire(0)
                if not second.breaker.acquire(now):
                    second.release()
                    second = None
        except (NoCapacity, Saturated):
            second = None
        if second is None:
            return await task_a, first
        task_b = asyncio.create_task(_awaited(call(second, max(0.001, per_try - hedge_after_s))))
        pending: dict[asyncio.Task[T], DeploymentState] = {task_a: first, task_b: second}
        last: GatewayError | None = None
        while pending:
            done, _ = await asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                dep = pending.pop(task)
                exc = task.exception()
                if exc is None:
                    for loser_task, loser in pending.items():
                        await self._cancel_loser(loser_task, loser, started, attempts)
                    return task.result(), dep
                if not isinstance(exc, GatewayError):
                    for loser_task, loser in pending.items():
                        await self._cancel_loser(loser_task, loser, started, attempts)
                    raise exc
                self._settle_failure(dep, exc, started, attempts)
                exc.settled = True  # type: ignore[attr-defined]
                exc.failed_deployment = dep  # type: ignore[attr-defined]
                last = exc
        assert last is not None
        raise last

    @staticmethod
    async def _cancel_loser(
        task: asyncio.Future[Any], dep: DeploymentState, started: float, attempts: list[AttemptRecord]
    ) -> None:
        task.cancel()
        try:
            result = await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we are being cancelled ourselves
            result = None
        except Exception:
            result = None
        close = getattr(result, "aclose", None)
        if close is not None:
            await close()  # a stream that started anyway: closing it frees its slot
        else:
            dep.release()
        dep.breaker.release_probe()
        attempts.append(
            AttemptRecord(dep.label, "cancelled", None, round((time.monotonic() - started) * 1000, 2))
        )

    def deployment(self, label: str) -> DeploymentState | None:
        """A deployment by its label (``provider/model``)."""
        for group in self._groups.values():
            for dep in group.deployments:
                if dep.label == label:
                    return dep
        return None

    def groups(self) -> list[ModelGroup]:
        return list({id(g): g for g in self._groups.values()}.values())

    def snapshot(self) -> list[dict[str, object]]:
        """Live state of every deployment, per model: what `modelyard models --state` shows."""
        now = time.monotonic()
        return [
            {
                "model": g.name,
                "strategy": g.routing.strategy,
                "fallbacks": list(g.routing.fallbacks),
                "deployments": [d.snapshot(now) for d in g.deployments],
            }
            for g in self.groups()
        ]

    async def execute(
        self,
        group: ModelGroup,
        call: Callable[[DeploymentState, float], Awaitable[T]],
        *,
        body: JSONDict,
        supports: Callable[[DeploymentState], bool] = lambda _d: True,
        exclude: set[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Execution[T]:
        """Run ``call(deployment, per_try_timeout)`` until it succeeds or attempts run out.

        ``call`` must acquire nothing itself: the slot is held here for non-streaming calls; for
        streams the caller receives the slot with the result and must release it (see chat.py).
        """
        routing = group.routing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + routing.deadline_s
        chain: list[ModelGroup] = [group]
        chain_names = {group.name}
        attempts: list[AttemptRecord] = []
        exclude = set(exclude or ())
        same_retries = 0
        last_exc: GatewayError | None = None
        last_retry_after: float | None = None
        key = sticky_key(routing.sticky, body)
        # Prompt-cache affinity (only within the model asked for; fallbacks balance as usual).
        akey = affinity_key(routing.affinity, body, headers or {}) if group.affinity is not None else None
        current = group

        def next_in_chain(reason_model: str | None = None) -> ModelGroup | None:
            names = [reason_model] if reason_model else list(group.routing.fallbacks)
            for name in names:
                if name in chain_names:
                    continue
                nxt = self._groups.get(name)
                if nxt is not None:
                    chain.append(nxt)
                    chain_names.add(name)
                    return nxt
            return None

        while len(attempts) < routing.max_attempts:
            now = time.monotonic()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                choice = current.select(
                    now,
                    exclude | {d.label for d in current.deployments if not supports(d)},
                    key,
                    akey if current is group else None,
                )
            except NoCapacity as exc:
                nxt = next_in_chain()
                if nxt is not None:
                    current, exclude, same_retries = nxt, set(), 0
                    continue
                if last_exc is not None:
                    last_exc.attempts = attempts  # type: ignore[attr-defined]
                    raise last_exc from None
                raise ServiceUnavailableError(
                    f"model {group.name!r} is at capacity: {exc}; retry after {exc.retry_after_s:.1f}s",
                    exc.retry_after_s,
                ) from None
            if choice.reason == "panic":
                # Every breaker of this model is open: a configured fallback model beats
                # hammering a deployment known to be down. Only with none left, panic mode.
                nxt = next_in_chain()
                if nxt is not None:
                    current, exclude, same_retries = nxt, set(), 0
                    continue
            dep = choice.deployment
            reason = choice.reason if current is group else f"fallback:{current.name}"
            if attempts and dep.label in {a.deployment for a in attempts}:
                # A retry of a deployment already tried: it must come out of its budget.
                if not dep.budget.try_spend(now, timeout=attempts[-1].outcome == "timeout"):
                    exclude.add(dep.label)
                    continue
                same_retries += 1
                delay = (
                    last_retry_after
                    if last_retry_after is not None
                    else full_jitter(
                        same_retries,
                        base_s=routing.retry.backoff_base_s,
                        cap_s=routing.retry.backoff_cap_s,
                        rng=self._rng,
                    )
                )
                if delay >= deadline - loop.time():
                    exclude.add(dep.label)
                    continue
                await asyncio.sleep(delay)
                reason = "retry"
            else:
                dep.budget.record_first_attempt(now)
            try:
                await dep.acquire(min(dep.policy.max_queue_wait_s, max(0.0, deadline - loop.time())))
            except Saturated:
                exclude.add(dep.label)
                continue
            last_resort = choice.reason == "panic" or not any(
                d is not dep and d.label not in exclude and d.available(time.monotonic()) and supports(d)
                for d in current.deployments
            )
            if not dep.breaker.acquire(time.monotonic()) and not last_resort:
                # (The last deployment of a group is never ejected: e.g. its breaker opened while
                # this request slept before retrying it.)
                dep.release()
                exclude.add(dep.label)
                continue
            started = time.monotonic()
            per_try = max(0.001, deadline - loop.time())
            try:
                if not attempts and routing.hedge_after_s is not None:
                    result, dep = await self._hedged(
                        current, dep, call, per_try, routing.hedge_after_s, exclude, key, supports, attempts
                    )
                else:
                    result = await call(dep, per_try)
            except GatewayError as exc:
                failed: DeploymentState = getattr(exc, "failed_deployment", dep)
                retry_after = parse_retry_after(getattr(exc, "retry_after", None), time.time())
                if getattr(exc, "settled", False):
                    outcome = attempts[-1].outcome
                else:
                    outcome = self._settle_failure(failed, exc, started, attempts)
                last_exc, last_retry_after = exc, retry_after
                if outcome == "error":
                    if is_context_length_error(exc) and group.routing.context_fallback:
                        nxt = next_in_chain(group.routing.context_fallback)
                        if nxt is not None:
                            current, exclude, same_retries = nxt, set(), 0
                            continue
                    exc.attempts = attempts  # type: ignore[attr-defined]
                    raise
                others = [
                    d
                    for d in current.deployments
                    if d is not failed
                    and d.label not in exclude
                    and d.available(time.monotonic())
                    and supports(d)
                ]
                if others:
                    exclude.add(failed.label)  # move at once to a different deployment
                    continue
                nxt = next_in_chain()
                if nxt is not None:
                    # A configured fallback model beats waiting to retry the same deployment.
                    current, exclude, same_retries = nxt, set(), 0
                elif retry_after is not None and retry_after >= deadline - loop.time():
                    exclude.add(failed.label)
                continue
            except BaseException:
                dep.release()
                dep.breaker.release_probe()
                raise
            if not getattr(result, "holds_slot", False):
                dep.release()
            dep.record_success(time.monotonic() - started)
            if akey is not None and current is group and group.affinity is not None:
                group.affinity.record(akey, dep, time.monotonic(), body)
            attempts.append(
                AttemptRecord(dep.label, "ok", 200, round((time.monotonic() - started) * 1000, 2))
            )
            return Execution(result, dep, reason, attempts)
        if last_exc is not None:
            last_exc.attempts = attempts  # type: ignore[attr-defined]
            raise last_exc
        raise ServiceUnavailableError(
            f"model {group.name!r}: the deadline of {routing.deadline_s:.0f}s passed", 1.0
        )

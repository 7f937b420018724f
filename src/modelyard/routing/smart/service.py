"""SmartRouting: the gateway's smart routes at run time.

``resolve`` turns a request naming a route (``model: "auto"``) into one naming the chosen model,
records the decision on the request context (header, request record, metrics) and remembers it
(a bounded in-memory map, and the store through a background writer) so that
``POST /v1/feedback`` can find it on any replica. A request naming a model passes through with
one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from modelyard.accounting.pricebook import PriceBook
from modelyard.config.load import RuntimeConfig
from modelyard.errors import GatewayError, ModelNotFoundError, PermissionDeniedError
from modelyard.providers.base import WireProtocol
from modelyard.providers.embeddings import TokenWindow
from modelyard.providers.registry import Registry
from modelyard.routing.router import Router
from modelyard.routing.smart.data_rules import check_data_rules
from modelyard.routing.smart.decide import (
    Analysis,
    Decision,
    PromptCache,
    Scan,
    allowed_candidates,
    analyse,
    choose,
    prompt_key,
    refuse,
    scan,
)
from modelyard.routing.smart.learned.features import DEFAULT_WINDOW
from modelyard.routing.smart.routes import Route, build_route, router_path
from modelyard.routing.smart.rules import Restriction, request_facts
from modelyard.routing.smart.tasks import TaskClassifier
from modelyard.store._feedback_sql import DecisionRow, FeedbackRow
from modelyard.store.base import Store

log = logging.getLogger("modelyard.smart")

MAX_REMEMBERED = 20_000
"""Recent decisions kept in memory for feedback (older ones are looked up in the store)."""
MAX_APPLIED = 200_000
"""Feedback rows remembered as applied (a small tuple each), so a replayed row is not counted twice."""
WRITE_INTERVAL_S = 0.5
MAX_QUEUED_WRITES = 100_000
MAX_REBUILD_ROWS = 1_000_000
"""Feedback rows replayed at start-up (the oldest first)."""
SYNC_INTERVAL_S = 10.0
"""How often a replica applies the feedback other replicas stored."""
SYNC_LOOKBACK_S = 60.0
"""Feedback is re-read this far behind the newest row seen (clock skew between replicas)."""


class SmartRouting:
    """The configured routes, their classifiers, bandits and recent decisions."""

    def __init__(
        self,
        config: RuntimeConfig,
        registry: Registry,
        router: Router,
        prices: PriceBook,
        store: Store,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._router = router
        self._store = store
        self._rng = rng or random.Random()
        self.routes: dict[str, Route] = {}
        self.rules = tuple(getattr(config, "rules", ()))
        """Gateway-wide data rules, for requests naming a model (routes carry them already)."""
        self.retention_s = config.request_log.retention_days * 86400
        chat: list[str] = []
        local: dict[str, bool] = {}
        for group in router.groups():
            chat_deps = [d for d in group.deployments if d.target.chat]
            if chat_deps:
                chat.append(group.name)
                local[group.name] = any(d.policy.local for d in chat_deps)

        def cost(model: str) -> int:
            """Blended list price per token (input + output, pico-dollars) of the model's first
            chat deployment: for ranking candidates only."""
            dep = next(d for d in router.group(model).deployments if d.target.chat)
            price = prices.price(
                dep.label, dep.target.provider.name, dep.target.upstream_model, dep.policy.local
            )
            return 0 if price is None else price.input.pico_per_token + price.output.pico_per_token

        self._base_dir = (
            Path(config.source).parent if config.source and not config.source.startswith("<") else Path()
        )
        for name, route_config in getattr(config, "routes", {}).items():
            self.routes[name] = build_route(
                name,
                route_config,
                chat,
                cost,
                lambda m: local.get(router.group(m).name, False),
                rng=self._rng,
            )
        self.cache = {name: PromptCache(r.config.cache_size) for name, r in self.routes.items()}
        self.decisions: OrderedDict[str, Decision] = OrderedDict()
        self._applied: OrderedDict[str, tuple[float, str | None, str | None]] = OrderedDict()
        """Request id → (score, model, route) of the feedback applied to the bandits."""
        self._watermark = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._encoder: Any = None
        self._ready: asyncio.Task[None] | None = None
        self._queue: list[DecisionRow] = []
        self._writer: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(2, thread_name_prefix="modelyard-route")
        return self._executor

    async def start(self) -> None:
        """Rebuild the bandits from stored feedback, start the decision writer, and prepare the
        classifiers in the background (a request that needs one waits for it)."""
        if not self.routes:
            return
        try:
            await self.rebuild()
        except Exception as exc:  # the gateway still routes, on priors
            log.warning("could not rebuild the routing bandits from stored feedback: %s", exc)
        self._writer = asyncio.create_task(self._write_loop())
        self._ready = asyncio.create_task(self._prepare())

    async def _prepare(self) -> None:
        loop = asyncio.get_running_loop()
        for route in self.routes.values():
            if route.config.router is not None and route.learned is None:
                try:
                    route.learned, route.learned_threshold = await loop.run_in_executor(
                        self._pool(), _load_learned, route, self._base_dir
                    )
                except Exception as exc:
                    log.error("route %r: cannot load its router file: %s", route.name, exc)
            if route.task_examples and route.classifier is None:
                texts = [t for examples in route.task_examples.values() for t in examples]
                try:
                    vectors = await self._encode(texts, _window(route))
                    build = partial(TaskClassifier.build, route.task_examples, vectors)
                    route.classifier = await loop.run_in_executor(
                        self._pool(), partial(build, min_confidence=route.config.min_confidence)
                    )
                except Exception as exc:  # requests still route, without tasks
                    message = exc.message if isinstance(exc, GatewayError) else repr(exc)
                    log.error("route %r: task classifier unavailable: %s", route.name, message)

    async def ready(self) -> None:
        """Wait until classifiers and learned routers are loaded (or failed to)."""
        if self._ready is None:
            self._ready = asyncio.create_task(self._prepare())
        await asyncio.shield(self._ready)

    async def aclose(self) -> None:
        for task in (self._ready, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        with contextlib.suppress(Exception):
            await self._flush()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _encode(self, texts: list[str], window: TokenWindow | None) -> Any:
        if self._encoder is None:
            self._encoder = self._registry.shared_embeddings()
        return await self._encoder.encode(texts, window)

    # -- the decision ------------------------------------------------------------------------
    def route_of(self, model: object) -> Route | None:
        return self.routes.get(model) if isinstance(model, str) else None

    async def decide(self, route: Route, body: dict[str, Any], ctx: Any) -> Decision:
        """The decision for one request (see modelyard.routing.smart.decide)."""
        loop = asyncio.get_running_loop()
        facts = request_facts(body, ctx.headers, ctx.principal)
        if route.config.rules or route.task_examples or route.config.router is not None:
            found = await loop.run_in_executor(self._pool(), scan, route, body, facts)
        else:
            found = Scan(Restriction(), "")  # nothing reads the content: no thread hop
        key = getattr(ctx.principal, "key", None)
        key_models = getattr(key, "models", None)
        allowed = allowed_candidates(route, found.restriction, key_models)
        if found.restriction.blocked_by is not None or not allowed:
            raise refuse(route, found.restriction)
        analysis = Analysis()
        if (route.task_examples or route.config.router is not None) and found.prompt:
            cache = self.cache[route.name]
            cache_key = prompt_key(route.name, found.prompt)
            cached = cache.get(cache_key)
            if cached is None:
                analysis = await self._analyse(route, found.prompt)
                if analysis.unavailable is None:
                    cache.put(cache_key, analysis)
            else:
                analysis = cached
        return choose(route, found.restriction, analysis, allowed, key_id=getattr(key, "id", None))

    async def _analyse(self, route: Route, prompt: str) -> Analysis:
        await self.ready()
        vector = None
        if route.needs_embedding:
            try:
                # One prompt per model run: micro-batching concurrent prompts was measured slower
                # here (padding to the longest prompt; benchmarks/RESULTS.md, smart routing).
                vector = (await self._encode([prompt], _window(route)))[0]
            except GatewayError as exc:
                return Analysis(unavailable=exc.message[:80])
        if route.task_examples and route.classifier is None and route.learned is None:
            return Analysis(unavailable="classifier not loaded")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool(), analyse, route, prompt, vector)
        except Exception as exc:  # a broken router file must not fail requests: decide on priors
            log.warning("route %r: analysis failed, deciding without it: %r", route.name, exc)
            return Analysis(unavailable=type(exc).__name__)

    async def resolve(self, client: WireProtocol, body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """``body`` with a route name replaced by the chosen model (other bodies as they are)."""
        route = self.route_of(body.get("model"))
        if route is None:
            if self.rules:
                await check_data_rules(self.rules, body, ctx, self._router.group, self._pool())
            return body
        try:
            decision = await self.decide(route, body, ctx)
        except PermissionDeniedError:
            ctx.route_name, ctx.route_reason = route.name, "refused"  # counted and logged as such
            raise
        self._record(decision, ctx)
        return {**body, "model": decision.model}

    async def resolve_embeddings(self, body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """An embeddings request naming a route goes to the route's embedding model."""
        route = self.route_of(body.get("model"))
        if route is None:
            if self.rules:
                await check_data_rules(
                    self.rules, body, ctx, self._router.group, self._pool(), embeddings=True
                )
            return body
        model = route.config.embeddings
        if model is None:
            raise ModelNotFoundError(
                f"route {route.name!r} has no embedding model; set `embeddings:` on the route, or "
                "name an embedding model (GET /v1/models lists them)"
            )
        restriction = None
        if route.config.rules:
            loop = asyncio.get_running_loop()
            facts = request_facts(body, ctx.headers, ctx.principal)
            restriction = (await loop.run_in_executor(self._pool(), scan, route, body, facts)).restriction
            if restriction.blocked_by is not None:
                raise refuse(route, restriction)
            group = self._router.group(model)
            if restriction.local_only and not any(
                d.policy.local and d.target.embeddings for d in group.deployments
            ):
                raise refuse(route, restriction)
        decision = Decision(
            route.name,
            model,
            "embeddings",
            "specialised:embeddings",
            "",
            bool(restriction and restriction.local_only),
            restriction.matched if restriction else (),
            getattr(getattr(ctx.principal, "key", None), "id", None),
            time.time(),
        )
        self._record(decision, ctx)
        return {**body, "model": model}

    def _record(self, decision: Decision, ctx: Any) -> None:
        ctx.route_name = decision.route
        ctx.route_decision = decision
        ctx.route_reason = decision.reason
        ctx.local_only = decision.local_only
        self.remember(ctx.request_id, decision, getattr(getattr(ctx.principal, "key", None), "team_id", None))

    # -- remembering decisions ---------------------------------------------------------------
    def remember(self, request_id: str, decision: Decision, team_id: str | None = None) -> None:
        self.decisions[request_id] = decision
        if len(self.decisions) > MAX_REMEMBERED:
            self.decisions.popitem(last=False)
        if self._writer is not None and len(self._queue) < MAX_QUEUED_WRITES:
            self._queue.append(
                DecisionRow(
                    request_id,
                    decision.created_at,
                    decision.key_id,
                    team_id,
                    decision.route,
                    decision.model,
                    decision.task,
                    decision.reason,
                    decision.detail,
                    decision.local_only,
                    decision.rules,
                )
            )

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:1000], self._queue[1000:]
            try:
                await self._store.write_route_decisions(batch)
            except Exception:
                self._queue = batch + self._queue  # kept; retried on the next tick
                raise

    async def _write_loop(self) -> None:
        last_purge = last_sync = time.monotonic()
        while True:
            await asyncio.sleep(WRITE_INTERVAL_S)
            try:
                await self._flush()
                if time.monotonic() - last_sync > SYNC_INTERVAL_S:
                    last_sync = time.monotonic()
                    await self.sync()
                if time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    await self._store.purge_route_decisions(time.time() - self.retention_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "writing routing decisions or reading feedback failed (will retry): %s",
                    type(exc).__name__,
                )

    async def lookup(self, request_id: str) -> DecisionRow | None:
        """A decision by request id: recent ones from memory, older ones (or another replica's)
        from the store."""
        decision = self.decisions.get(request_id)
        if decision is not None:
            return DecisionRow(
                request_id,
                decision.created_at,
                decision.key_id,
                None,
                decision.route,
                decision.model,
                decision.task,
                decision.reason,
                decision.detail,
                decision.local_only,
                decision.rules,
            )
        for row in self._queue:
            if row.request_id == request_id:
                return row
        return await self._store.route_decision(request_id)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every route: its candidates (cost, locality, prior), tasks, learned router, the bandit's
        posteriors per task and the prompt cache's hits (``GET /admin/routes``)."""
        out = []
        for name, route in self.routes.items():
            config = route.config
            cache = self.cache[name]
            out.append(
                {
                    "route": name,
                    "quality_target": config.quality_target,
                    "candidates": [
                        {
                            "model": c.name,
                            "cost_pico_per_token": c.cost_pico,
                            "relative_cost": round(c.relative_cost, 6),
                            "local": c.local,
                            "prior_quality": round(c.prior, 4),
                        }
                        for c in route.candidates
                    ],
                    "tasks": {task: t.model for task, t in config.tasks.items()},
                    "classifier": None
                    if route.classifier is None
                    else {
                        "temperature": round(route.classifier.temperature, 5),
                        "examples": len(route.classifier.labels),
                    },
                    "router": None
                    if config.router is None
                    else {
                        "file": config.router.file,
                        "loaded": route.learned is not None,
                        "threshold": route.learned_threshold,
                    },
                    "rules": [r.name or f"rule{i}" for i, r in enumerate(config.rules)],
                    "bandit": {
                        "enabled": config.bandit.enabled,
                        "exploration": config.bandit.exploration,
                        "posteriors": route.bandit.snapshot(),
                    },
                    "cache": {"hits": cache.hits, "misses": cache.misses},
                }
            )
        return out

    # -- learning ----------------------------------------------------------------------------
    def learn(self, row: FeedbackRow, previous: FeedbackRow | None = None) -> bool:
        """Apply one feedback row to its route's bandit, once: a row already applied (from this
        replica's submissions, the start-up replay or the sync) is skipped; a changed score on the
        same request replaces the earlier one (``previous``, if this replica never applied it).
        False when nothing was learned (unchanged, no route, or learning off)."""
        key = (row.score, row.model, row.route)
        applied = self._applied.get(row.request_id)
        if applied is None and previous is not None:
            applied = (previous.score, previous.model, previous.route)
        self._remember_applied(row.request_id, key, row.created_at)
        if applied == key or row.route is None or row.model is None:
            return False
        route = self.routes.get(row.route)
        if route is None:
            return False
        task = row.task or ""
        if task and task not in route.config.tasks:
            task = ""
        if applied is not None and applied[1:] == key[1:]:
            return route.bandit.update(task, row.model, row.score - applied[0], replace=True)
        return route.bandit.update(task, row.model, row.score)

    def _remember_applied(
        self, request_id: str, key: tuple[float, str | None, str | None], at: float
    ) -> None:
        self._applied[request_id] = key
        self._applied.move_to_end(request_id)
        self._watermark = max(self._watermark, at)
        while len(self._applied) > MAX_APPLIED:
            self._applied.popitem(last=False)

    async def rebuild(self) -> int:
        """Replay every stored feedback row into the bandits; returns how many were applied."""
        rows = await self._store.feedback(limit=MAX_REBUILD_ROWS)
        return sum(self.learn(row) for row in rows)

    async def sync(self) -> int:
        """Apply feedback other replicas stored since the last look (rows this replica applied
        already are skipped); returns how many were applied."""
        rows = await self._store.feedback(since=self._watermark - SYNC_LOOKBACK_S, limit=MAX_REBUILD_ROWS)
        return sum(self.learn(row) for row in rows)


def _window(route: Route) -> TokenWindow | None:
    """The token window a route embeds prompts with: its router file's (the one it was trained
    on; None = the first 254 word pieces), else the route's ``prompt_input`` (default: the bounded
    window). The task classifier's examples and the requests are embedded alike."""
    learned = route.learned
    if learned is not None:
        return learned.window  # type: ignore[no-any-return]
    return DEFAULT_WINDOW if route.config.prompt_input == "window" else None


def _load_learned(route: Route, base_dir: Path) -> tuple[Any, float]:
    from modelyard.routing.smart.learned.runtime import LearnedRouter

    config = route.config.router
    assert config is not None
    learned = LearnedRouter.load(router_path(config.file, base_dir))
    if config.threshold is not None:
        threshold = config.threshold
    else:
        share = config.strong_share if config.strong_share is not None else 0.5
        threshold = float(learned.threshold_for_share(share))
    return learned, threshold


__all__ = ["SmartRouting"]

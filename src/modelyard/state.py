"""AppState: everything the running gateway holds, built in the lifespan and passed explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from modelyard.accounting.pricebook import PriceBook
from modelyard.api.admin import AdminAPI
from modelyard.cache import ResponseCache, cache_for
from modelyard.config.load import RuntimeConfig
from modelyard.conversations.service import ConversationService
from modelyard.policy.admission import Admission
from modelyard.policy.auth import Authenticator
from modelyard.policy.leases import DirectReservations, LeasedReservations, Reservations
from modelyard.policy.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from modelyard.policy.ratelimit_leases import LeasedRateLimiter
from modelyard.policy.refused import RefusedLedger
from modelyard.providers._http import new_session
from modelyard.providers.registry import Registry
from modelyard.redact import Redactor
from modelyard.routing.chat import ChatService
from modelyard.routing.context import ContextService
from modelyard.routing.context.summarizer import admitted_summarizer
from modelyard.routing.router import Router
from modelyard.routing.smart.service import SmartRouting
from modelyard.store.base import Store
from modelyard.store.factory import store_for
from modelyard.telemetry.observability import Observability
from modelyard.telemetry.record import TelemetryHub
from modelyard.telemetry.requestlog_sink import RequestLogSink

log = logging.getLogger("modelyard")


@dataclass
class AppState:
    config: RuntimeConfig
    session: aiohttp.ClientSession
    registry: Registry
    router: Router
    chat: ChatService
    redact: Redactor
    store: Store
    limiter: RateLimiter
    prices: PriceBook
    auth: Authenticator
    admission: Admission
    admin: AdminAPI
    telemetry: TelemetryHub
    observability: Observability
    """Metrics registry (``GET /metrics``), request-log and trace sinks, and their background work."""
    conversations: ConversationService
    """Server-side conversations and stored ``/v1/responses`` answers (with their retention purge)."""
    startup_errors: list[str] = field(default_factory=list)
    request_log: RequestLogSink | None = None
    """Stores each inference request (``GET /admin/requests``, the dashboard at ``/ui``)."""
    refused: RefusedLedger | None = None
    """A ledger row for each inference request refused before any attempt (401/403/429...)."""
    cache: ResponseCache | None = None
    context: ContextService | None = None
    """Token counting and context fitting per model (docs/context.md)."""
    """The response cache (exact and semantic); None when no model is cached."""
    smart: SmartRouting | None = None
    """Smart routes (``model: auto``), their decisions and feedback (docs/smart-routing.md)."""
    _warmup: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, config: RuntimeConfig) -> AppState:
        secrets = [s for m in config.models for s in m.secrets if s]
        if config.master_key:
            secrets.append(config.master_key)
        redact = Redactor(secrets)
        session = new_session(config.server.connect_timeout_s)
        registry = Registry(config, session, redact)
        router = Router(config, registry)
        chat = ChatService(router, default_anthropic_max_tokens=config.server.default_anthropic_max_tokens)
        store = store_for(config.database_url, sqlite_synchronous=config.storage.sqlite_synchronous)
        observability = Observability.build(config, router, store, redact)
        metrics = observability.metrics
        limiter: RateLimiter
        if config.rate_limits.backend == "redis" and config.redis_url:
            limiter = RedisRateLimiter(config.redis_url)
            if config.storage.reservations == "leased":
                limiter = LeasedRateLimiter(
                    limiter,
                    max_age_s=config.storage.lease_max_age_s,
                    on_lease=metrics.leases.labels("rate_limit").inc,
                    on_wait=metrics.lease_waits.labels("rate_limit").inc,
                )
        else:
            limiter = MemoryRateLimiter()
        prices = PriceBook(config)
        for group in router.groups():
            for dep in group.deployments:
                if dep.policy.local:
                    prices.register_local(dep.label, dep.policy.hardware)
        auth = Authenticator(config.master_key, store)
        reservations: Reservations = (
            LeasedReservations(
                store,
                Path(config.lease_journal_dir),
                max_age_s=config.storage.lease_max_age_s,
                on_lease=metrics.leases.labels("budget").inc,
                on_wait=metrics.lease_waits.labels("budget").inc,
            )
            if config.storage.reservations == "leased"
            else DirectReservations(store)
        )
        admission = Admission(config, store, limiter, prices, router, reservations)
        context = ContextService(config, router)
        context.summarizer = admitted_summarizer(admission, chat, router)
        admin = AdminAPI(store, on_key_change=auth.forget)
        telemetry = TelemetryHub(observability.sinks())
        request_log = RequestLogSink(store, config.request_log, redact=redact)
        telemetry.add(request_log)
        refused = RefusedLedger(store, on_drop=observability.metrics.ledger_refused_dropped.inc)
        telemetry.add(refused)
        return cls(
            config,
            session,
            registry,
            router,
            chat,
            redact,
            store,
            limiter,
            prices,
            auth,
            admission,
            admin,
            telemetry,
            observability,
            request_log=request_log,
            context=context,
            conversations=ConversationService(store, config.conversations),
            cache=cache_for(config, registry),
            refused=refused,
            smart=SmartRouting(config, registry, router, prices, store) if config.routes else None,
        )

    async def open(self) -> None:
        """Connect to the store and settle what a crash left pending."""
        await self.store.open()
        # Journals first: a dead process's leases settle exactly, before deadline recovery would
        # charge them whole.
        from_journals = await self.admission.reservations.recover()
        if from_journals:
            log.warning(
                "settled %d requests left in flight by a stopped process (at their reserved cost), "
                "from its lease journal",
                from_journals,
            )
        self.admission.reservations.start()
        recovered = await self.store.recover_pending(time.time())
        if recovered:
            log.warning(
                "settled %d reservations left pending by an earlier crash (at their reserved cost)", recovered
            )
        await self.observability.start()
        if self.request_log is not None:
            self.request_log.start()
        self.conversations.start()
        if self.cache is not None:
            self.cache.start()  # follows the replicas' shared semantic index (Redis)
        if self.smart is not None:
            await self.smart.start()
        if self.refused is not None:
            self.refused.start()

    def start_local_models(self) -> None:
        """Load local models in the background: /healthz answers at once, /readyz once loaded."""

        async def warm() -> None:
            for provider in self.registry.local_providers():
                start = getattr(provider, "start", None)
                if start is None:
                    continue
                try:
                    await start()
                except Exception as exc:
                    message = f"{provider.name}: failed to start: {self.redact(str(exc))}"
                    self.startup_errors.append(message)
                    log.error(message)

        self._warmup = asyncio.create_task(warm())

    async def ready(self) -> tuple[bool, list[str]]:
        problems = list(self.startup_errors)
        for provider in self.registry.providers():
            if not await provider.ready():
                problems.append(f"{provider.name}: still loading")
        return not problems, problems

    async def aclose(self) -> None:
        await self.observability.aclose()
        if self.smart is not None:
            await self.smart.aclose()  # writes the decisions still queued
        if self._warmup is not None:
            self._warmup.cancel()
            with contextlib.suppress(BaseException):
                await self._warmup
        for provider in self.registry.providers():
            try:
                await provider.aclose()
            except Exception as exc:
                log.warning("closing %s failed: %s", provider.name, self.redact(str(exc)))
        await self.session.close()
        if self.cache is not None:
            await self.cache.aclose()  # finishes the writes in flight
        if self.request_log is not None:
            await self.request_log.aclose()  # writes what is queued, while the store is open
        await self.conversations.aclose()
        if self.refused is not None:
            await self.refused.aclose()
        await self.auth.aclose()  # key reads under way finish while the store is open
        try:
            await self.admission.reservations.aclose()  # settles the leases with nothing in flight
        except Exception as exc:
            log.error("closing the budget leases failed: %s", self.redact(str(exc)))
        try:
            await self.store.aclose()  # flushes every queued settlement
        finally:
            await self.limiter.aclose()

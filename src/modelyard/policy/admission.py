"""Admission and settlement: the money side of one request.

``admit`` (before any upstream call): the key may use the model; ``max_tokens`` within the key's
cap; RPM/TPM of key and team, increment-on-check; the request's *maximum* cost reserved on every
budget that applies (key, user, team, org) — durably, before the upstream is called.
``settle`` (after the answer, or the stream's end, failure or abandonment): one ledger row per
attempt with tokens and actual cost; the reservation moves to actual spend; TPM to actual tokens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from modelyard.accounting.catalog import ModelPrice
from modelyard.accounting.cost import (
    Protocol,
    max_cost,
    prompt_upper_tokens,
    request_cost,
    requested_max_tokens,
)
from modelyard.accounting.pricebook import PriceBook
from modelyard.api.asgi import RequestContext
from modelyard.config.load import RuntimeConfig
from modelyard.errors import (
    BudgetExceededError,
    GatewayError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
)
from modelyard.policy.auth import Principal
from modelyard.policy.leases import DirectReservations, Reservations
from modelyard.policy.ratelimit import LimitCheck, RateLimitBackendError, RateLimiter
from modelyard.providers.base import JSONDict, WireProtocol
from modelyard.routing.deployment import DeploymentState
from modelyard.routing.group import ModelGroup
from modelyard.routing.router import Router
from modelyard.store.base import AttemptRow, Reservation, Scope, Settlement, Store

log = logging.getLogger("modelyard.admission")

DEFAULT_RESERVED_OUTPUT_TOKENS = 4096
"""What a request that names no max_tokens is reserved for (its real cost settles the difference)."""
STATUS_OF_OUTCOME = {
    "ok": "ok",
    "retryable": "error",
    "error": "error",
    "timeout": "timeout",
    "cancelled": "cancelled",
    "cut": "upstream_cut",
}


def _proto(protocol: WireProtocol) -> Protocol:
    return "anthropic" if protocol is WireProtocol.ANTHROPIC else "openai"


def _usd(nano: int) -> str:
    return f"${nano / 1e9:.6f}"


@dataclass(slots=True)
class Ticket:
    """What admission took, to be given back or settled."""

    principal: Principal
    request_id: str
    model: str
    protocol: WireProtocol
    max_cost_nano: int
    prompt_estimate: int
    reservation: Reservation | None
    tpm_checks: list[LimitCheck] = field(default_factory=list)
    admitted_at: float = 0.0
    settled: bool = False
    body: JSONDict | None = None


class Admission:
    def __init__(
        self,
        config: RuntimeConfig,
        store: Store,
        limiter: RateLimiter,
        prices: PriceBook,
        router: Router,
        reservations: Reservations | None = None,
    ) -> None:
        self._config = config
        self._reservations: Reservations = reservations or DirectReservations(store)
        self._limiter = limiter
        self._prices = prices
        self._router = router
        self._always_durable = config.storage.durable_admission == "always"

    @property
    def reservations(self) -> Reservations:
        """Where maximum costs are reserved: the store per request, or per-process leases."""
        return self._reservations

    # -- admission ---------------------------------------------------------------------------
    def _check_key(
        self,
        principal: Principal,
        body: JSONDict,
        protocol: WireProtocol,
        group: ModelGroup,
        route: str | None = None,
    ) -> None:
        key = principal.key
        if key is None:
            return
        if (
            key.models is not None
            and body["model"] not in key.models
            and group.name not in key.models
            and route not in key.models  # a key allowed a smart route may use what it chooses
        ):
            allowed = ", ".join(key.models) or "(none)"
            raise PermissionDeniedError(f"this key may not use model {body['model']!r}; allowed: {allowed}")
        if key.max_tokens is not None:
            asked = requested_max_tokens(body, _proto(protocol), default=-1)
            if asked > key.max_tokens:
                raise InvalidRequestError(
                    f"max_tokens {asked} is above this key's cap of {key.max_tokens}; ask for at most that",
                    param="max_tokens",
                )
            if asked < 0:
                body["max_tokens"] = key.max_tokens  # the cap bounds what this request can cost

    def _max_cost(self, group: ModelGroup, body: JSONDict, protocol: WireProtocol) -> tuple[int, int]:
        """(the most the request can cost on any deployment it may reach, its prompt estimate)."""
        proto = _proto(protocol)
        prompt = prompt_upper_tokens(body, proto)
        out = requested_max_tokens(body, proto, default=DEFAULT_RESERVED_OUTPUT_TOKENS)
        worst = 0
        for dep in self._reachable(group):
            price = self._price_of(dep)
            if price is not None:
                worst = max(worst, max_cost(price, prompt, out))
        return worst, prompt

    def _reachable(self, group: ModelGroup) -> list[DeploymentState]:
        deps = list(group.deployments)
        for name in (*group.routing.fallbacks, group.routing.context_fallback):
            if name:
                try:
                    deps += self._router.group(name).deployments
                except GatewayError:  # config checked the names; be safe anyway
                    continue
        return deps

    def _price_of(self, dep: DeploymentState) -> ModelPrice | None:
        target = dep.target
        return self._prices.price(target.label, target.provider.name, target.upstream_model, dep.policy.local)

    def _limit_checks(self, principal: Principal, tokens: int) -> list[LimitCheck]:
        checks: list[LimitCheck] = []
        key = principal.key
        if key is None:
            return checks
        if key.rpm:
            checks.append(LimitCheck("key", key.id, "rpm", key.rpm, 1))
        if key.tpm:
            checks.append(LimitCheck("key", key.id, "tpm", key.tpm, tokens))
        team = self._config.teams.get(key.team_id or "") if key.team_id else None
        if team is not None and key.team_id:
            if team.rpm:
                checks.append(LimitCheck("team", key.team_id, "rpm", team.rpm, 1))
            if team.tpm:
                checks.append(LimitCheck("team", key.team_id, "tpm", team.tpm, tokens))
        return checks

    async def admit(
        self,
        principal: Principal,
        body: JSONDict,
        protocol: WireProtocol,
        group: ModelGroup,
        ctx: RequestContext,
    ) -> Ticket:
        self._check_key(principal, body, protocol, group, getattr(ctx, "route_name", None))
        durable = principal.key is not None or self._always_durable
        if durable:
            worst, prompt = self._max_cost(group, body, protocol)
        else:
            # Nothing is reserved for an unbudgeted caller: skip the pricing work on its hot path.
            worst, prompt = 0, 0
        out = requested_max_tokens(body, _proto(protocol), default=DEFAULT_RESERVED_OUTPUT_TOKENS)
        checks = self._limit_checks(principal, prompt + out)
        now = time.time()
        if checks:
            try:
                decision = await self._limiter.acquire(checks)
            except RateLimitBackendError:
                if not self._config.rate_limits.fail_open:
                    raise
                log.warning(
                    "rate-limit backend unreachable: admitting request %s (fail_open)", ctx.request_id
                )
            else:
                if not decision.allowed:
                    violated = decision.violated
                    what = (
                        f"{violated.scope} {violated.kind.upper()} limit of {violated.limit}"
                        if violated
                        else "limit"
                    )
                    raise RateLimitedError(
                        f"rate limited: this request would exceed the {what}; retry after "
                        f"{decision.retry_after_s:.1f}s",
                        retry_after_s=decision.retry_after_s,
                    )
                now = decision.at
        tpm = [c for c in checks if c.kind == "tpm"]
        ticket = Ticket(
            principal, ctx.request_id, str(body["model"]), protocol, worst, prompt, None, tpm, now, body=body
        )
        if durable:
            key = principal.key
            budgets: list[tuple[Scope, str]] = []
            if key is not None:
                budgets.append((Scope.KEY, key.id))
                budgets += [
                    (scope, value)
                    for scope, value in (
                        (Scope.USER, key.user_id),
                        (Scope.TEAM, key.team_id),
                        (Scope.ORG, key.org_id),
                    )
                    if value
                ]
            reservation = Reservation(
                request_id=ctx.request_id,
                max_cost_nano=worst,
                budgets=tuple(budgets),
                key_id=key.id if key else None,
                team_id=key.team_id if key else None,
                user_id=key.user_id if key else None,
                org_id=key.org_id if key else None,
                tags=key.tags if key else (),
                model=ticket.model,
                created_at=time.time(),
                deadline_at=time.time() + group.routing.deadline_s + 60,
            )
            denied = await self._reservations.reserve(reservation)
            if denied is not None:
                await self._give_back_tokens(ticket)
                spec = denied.spec
                left = spec.limit_nano - denied.spend_nano - denied.reserved_nano
                raise BudgetExceededError(
                    f"budget_exceeded: the {spec.period.value} budget of {spec.scope.value} {spec.scope_id} "
                    f"({_usd(spec.limit_nano)}) has {_usd(max(0, left))} left; this request may cost up to "
                    f"{_usd(worst)}. Lower max_tokens, or raise the budget",
                    code="budget_exceeded",
                )
            ticket.reservation = reservation
        return ticket

    async def _give_back_tokens(self, ticket: Ticket) -> None:
        for check in ticket.tpm_checks:
            try:
                await self._limiter.adjust(check, -check.cost, ticket.admitted_at)
            except RateLimitBackendError:
                log.warning(
                    "could not return reserved tokens to the rate limiter (request %s)", ticket.request_id
                )

    # -- settlement --------------------------------------------------------------------------
    async def settle(self, ticket: Ticket, ctx: RequestContext, outcome: str) -> None:
        """Record every attempt and the actual cost. ``outcome`` is how the answer ended for the
        caller: ``ok``, ``upstream_cut``, ``timeout``, ``client_disconnect`` or ``error``."""
        if ticket.settled:
            return
        ticket.settled = True
        usage = ctx.usage
        answered = any(a.outcome in ("ok", "cut") for a in ctx.attempt_log)
        if (outcome != "ok" or not usage.reported) and answered:
            # An answer started and ended early: bill what was generated. (A request that never
            # got an answer has no tokens to estimate.)
            # The prompt's upper bound counts a token per byte; ~4 bytes a token is the estimate.
            upper = prompt_upper_tokens(ticket.body, _proto(ticket.protocol)) if ticket.body else 0
            usage.estimate_if_unreported(max(1, upper // 4))
        key = ticket.principal.key
        rows: list[AttemptRow] = []
        now = time.time()
        served_tokens = 0
        last_ok = max((i for i, a in enumerate(ctx.attempt_log) if a.outcome == "ok"), default=-1)
        for number, attempt in enumerate(ctx.attempt_log, start=1):
            dep = self._router.deployment(attempt.deployment)
            # Usage belongs to the attempt that finished the answer (after a mid-stream failover
            # the usage already sums both parts).
            served = number - 1 == last_ok
            status = outcome if served else STATUS_OF_OUTCOME.get(attempt.outcome, "error")
            tokens_in = usage.tokens_in if served else 0
            tokens_out = usage.tokens_out if served else 0
            cost = 0
            if served and dep is not None:
                price = self._price_of(dep)
                if price is not None:
                    cost = request_cost(
                        price,
                        tokens_in,
                        tokens_out,
                        usage.cache_read,
                        usage.cache_write - usage.cache_write_1h,
                        cache_write_1h=usage.cache_write_1h,
                    )
                served_tokens = tokens_in + tokens_out + usage.cache_read + usage.cache_write
                if dep.policy.local and tokens_out:
                    self._prices.record_local(
                        dep.label,
                        tokens_in + usage.cache_read,
                        tokens_out,
                        attempt.latency_ms / 1000,
                        ctx.ttft_s,
                        max(1, dep.in_flight + 1),
                    )
            rows.append(
                AttemptRow(
                    request_id=ticket.request_id,
                    attempt=number,
                    key_id=key.id if key else None,
                    team_id=key.team_id if key else None,
                    user_id=key.user_id if key else None,
                    org_id=key.org_id if key else None,
                    tags=key.tags if key else (),
                    model_requested=ticket.model,
                    deployment=attempt.deployment,
                    route_reason=ctx.route or "-",
                    local=bool(dep and dep.policy.local),
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    tokens_cache_read=usage.cache_read if served else 0,
                    tokens_cache_write=usage.cache_write if served else 0,
                    cost_nano=cost,
                    status=status,
                    http_status=attempt.status,
                    latency_ms=attempt.latency_ms,
                    ttft_ms=None if ctx.ttft_s is None or not served else round(ctx.ttft_s * 1000, 2),
                    created_at=now,
                )
            )
        ctx.cost_nano = sum(r.cost_nano for r in rows)
        await self._reservations.settle(Settlement(ticket.request_id, tuple(rows)))
        for check in ticket.tpm_checks:
            try:
                await self._limiter.adjust(check, served_tokens - check.cost, ticket.admitted_at)
            except RateLimitBackendError:
                log.warning("could not settle TPM for request %s", ticket.request_id)

"""The store interface: what the gateway keeps durably, whatever the database.

Money is integer **nano-dollars** (1 USD = 10**9) everywhere: a per-token price of
$0.15 per million tokens is exactly 150 nano-dollars per token; sums never drift.

Life of a request's money:

1. ``reserve``: at admission, the request's *maximum* cost is reserved atomically against every
   budget that applies (key, team, user, org); a ``pending`` reservation row is durable before
   the upstream call. If any budget would be exceeded, nothing is reserved.
2. ``settle``: afterwards, one ledger row per attempt is written, the budgets' spend grows by the
   actual cost and their reservation shrinks by the reserved amount — one transaction.
3. ``recover_pending``: on start-up, reservations left ``pending`` by a crash and older than the
   request deadline are settled at the reserved amount (conservative: never under-charge).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelyard.conversations.model import (
    ConversationItem,
    ConversationRecord,
    ConversationScope,
    JSONDict,
    StoredResponse,
    TurnOptions,
)
from modelyard.store._feedback_sql import DecisionRow, FeedbackRow
from modelyard.store.requestlog import RequestQuery, RequestRow, RollupQuery, Visibility

NANO_PER_USD = 1_000_000_000


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"
    KEY_HOLDER = "key-holder"


class Period(StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"
    TOTAL = "total"


class Scope(StrEnum):
    KEY = "key"
    USER = "user"
    TEAM = "team"
    ORG = "org"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    hash: str
    """SHA-256 hex of the key; the key itself is never stored."""
    hint: str
    """Prefix + last 4 characters, for display."""
    role: Role
    name: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None
    """Model names the key may use; None = every model."""
    max_tokens: int | None = None
    """Cap on a request's max_tokens (and the default when a request gives none)."""
    rpm: int | None = None
    tpm: int | None = None
    expires_at: float | None = None
    """Unix seconds; None = never."""
    revoked_at: float | None = None
    created_at: float = 0.0
    created_by: str | None = None
    """Id of the key that created this one (None: the master key)."""
    store_prompts: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def active(self, now: float) -> bool:
        return (self.revoked_at is None or self.revoked_at > now) and (
            self.expires_at is None or self.expires_at > now
        )


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    scope: Scope
    scope_id: str
    period: Period
    limit_nano: int


@dataclass(frozen=True, slots=True)
class BudgetState:
    spec: BudgetSpec
    spend_nano: int
    reserved_nano: int
    period_start: float
    """Unix seconds when the current period began (daily: UTC midnight; monthly: the 1st, UTC)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    max_cost_nano: int
    budgets: tuple[tuple[Scope, str], ...]
    """Every (scope, id) whose budgets (all periods) this request is charged to."""
    key_id: str | None
    team_id: str | None
    user_id: str | None
    org_id: str | None
    tags: tuple[str, ...]
    model: str
    created_at: float
    deadline_at: float
    """After this, a reservation still pending is settled conservatively by recovery."""


@dataclass(frozen=True, slots=True)
class Denied:
    """The budget that a reservation would have exceeded."""

    spec: BudgetSpec
    spend_nano: int
    reserved_nano: int


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One ledger row: one attempt of one request."""

    request_id: str
    attempt: int
    key_id: str | None
    team_id: str | None
    user_id: str | None
    org_id: str | None
    tags: tuple[str, ...]
    model_requested: str
    deployment: str
    route_reason: str
    local: bool
    tokens_in: int
    tokens_out: int
    tokens_cache_read: int
    tokens_cache_write: int
    cost_nano: int
    status: str
    """``ok``, ``error``, ``upstream_cut``, ``client_disconnect``, ``timeout``, ``cancelled`` or
    ``recovered``."""
    http_status: int | None
    latency_ms: float
    ttft_ms: float | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    rows: tuple[AttemptRow, ...]
    """Every attempt of the request (possibly none: rejected before any upstream call)."""

    @property
    def cost_nano(self) -> int:
        return sum(r.cost_nano for r in self.rows)


class Store(abc.ABC):
    """A durable store. All methods are coroutines and never block the event loop."""

    # -- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and run migrations (named, idempotent)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush every queued settlement, then disconnect."""

    # -- keys --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def insert_key(self, record: KeyRecord) -> None: ...

    @abc.abstractmethod
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def key_by_id(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def list_keys(
        self,
        *,
        team_id: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        include_revoked: bool = False,
    ) -> list[KeyRecord]: ...

    @abc.abstractmethod
    async def revoke_key(self, key_id: str, at: float) -> bool:
        """Set revoked_at (may be in the future: a rotation's overlap window). False if unknown."""

    # -- budgets -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def set_budget(self, spec: BudgetSpec) -> None:
        """Create or change a budget's limit (spend so far is kept)."""

    @abc.abstractmethod
    async def delete_budget(self, scope: Scope, scope_id: str, period: Period) -> bool: ...

    @abc.abstractmethod
    async def budgets(self, scope: Scope | None = None, scope_id: str | None = None) -> list[BudgetState]: ...

    @abc.abstractmethod
    async def reserve(self, reservation: Reservation) -> Denied | None:
        """Atomically reserve ``max_cost_nano`` on every budget of ``reservation.budgets`` and write
        the pending reservation, durably; or reserve nothing and return the budget that would be
        exceeded. Holds across processes sharing the database."""

    @abc.abstractmethod
    async def settle(self, settlement: Settlement) -> None:
        """Write the attempt rows and move the reservation to actual spend. Returns once queued;
        the write is retried until committed (never dropped). Settling twice is a no-op."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every settlement queued so far is committed."""

    @abc.abstractmethod
    async def recover_pending(self, now: float) -> int:
        """Settle reservations still pending past their deadline at the reserved amount; returns how many."""

    # -- reports -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def spend_report(
        self,
        *,
        group_by: str,
        since: float,
        until: float | None = None,
        filters: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of {group, requests, tokens_in, tokens_out, cost_nano, local_requests, local_tokens,
        local_cost_nano} grouped by one of key, team, user, org, model, deployment, tag, status."""

    @abc.abstractmethod
    async def ledger_rows(
        self, *, since: float | None = None, request_id: str | None = None, limit: int = 100
    ) -> list[AttemptRow]: ...

    # -- request log (see modelyard.store.requestlog) ----------------------------------------
    @abc.abstractmethod
    async def write_requests(self, rows: Sequence[RequestRow]) -> int:
        """Store request rows and add them to the rollups, in one transaction. Rows already stored
        are skipped (so a retried batch is harmless). Returns how many were new."""

    @abc.abstractmethod
    async def search_requests(self, query: RequestQuery) -> list[RequestRow]:
        """Request rows matching ``query``, newest first, without prompt and answer bodies."""

    @abc.abstractmethod
    async def request_by_id(self, request_id: str, visibility: Visibility | None = None) -> RequestRow | None:
        """One request with its captured bodies, if stored and visible."""

    @abc.abstractmethod
    async def request_rollup(self, query: RollupQuery) -> list[dict[str, Any]]:
        """Summed request rollups (see :class:`~modelyard.store.requestlog.RollupQuery`)."""

    @abc.abstractmethod
    async def request_latency(self, since: float, until: float, res: int) -> list[tuple[Any, ...]]:
        """Latency histogram counts: (model, deployment, metric, slot, count) rows."""

    @abc.abstractmethod
    async def purge_requests(self, before: float) -> int:
        """Delete request rows (and rollups) older than ``before``; returns the rows deleted."""

    # -- conversations (see modelyard.conversations) -----------------------------------------
    @abc.abstractmethod
    async def load_conversation(
        self, conversation_id: str
    ) -> tuple[ConversationRecord, list[ConversationItem]] | None:
        """A conversation and its stored messages in order, or None if unknown."""

    @abc.abstractmethod
    async def create_conversation(self, record: ConversationRecord) -> ConversationRecord:
        """Create it unless the id exists; returns the stored row (an existing one wins)."""

    @abc.abstractmethod
    async def append_conversation(
        self, conversation_id: str, messages: Sequence[JSONDict], options: TurnOptions
    ) -> bool:
        """Append one turn atomically (and drop turns older than the newest ``max_turns``),
        creating the conversation first if ``options.create_for`` says so; False, writing nothing,
        if it does not exist or its owner is outside ``options.scope``."""

    @abc.abstractmethod
    async def list_conversations(
        self, scope: ConversationScope, *, limit: int = 100, before: float | None = None
    ) -> list[ConversationRecord]:
        """Conversations ``scope`` allows, last updated first (``before``: older than that)."""

    @abc.abstractmethod
    async def delete_conversation(self, conversation_id: str) -> bool: ...

    @abc.abstractmethod
    async def purge_conversations(self, before: float) -> int:
        """Delete conversations last updated, and stored responses created, before ``before``."""

    @abc.abstractmethod
    async def put_response(self, response: StoredResponse) -> None: ...

    @abc.abstractmethod
    async def response_chain(self, response_id: str, max_depth: int) -> list[StoredResponse]:
        """The response and those before it (``previous_response_id``), newest first, at most
        ``max_depth``; empty if the response is unknown."""

    @abc.abstractmethod
    async def delete_response(self, response_id: str) -> bool: ...

    # -- smart routing: decisions and feedback (see modelyard.store._feedback_sql) -----------
    @abc.abstractmethod
    async def write_route_decisions(self, rows: Sequence[DecisionRow]) -> int:
        """Store smart-route decisions (one per request; rows already stored are skipped)."""

    @abc.abstractmethod
    async def route_decision(self, request_id: str) -> DecisionRow | None:
        """The stored decision of one request, if any."""

    @abc.abstractmethod
    async def put_feedback(self, row: FeedbackRow) -> None:
        """Store feedback on a request, replacing earlier feedback on the same request."""

    @abc.abstractmethod
    async def feedback(
        self, *, request_id: str | None = None, since: float = 0.0, limit: int = 100_000
    ) -> list[FeedbackRow]:
        """Feedback on one request, or all feedback since ``since`` (oldest first, at most ``limit``)."""

    @abc.abstractmethod
    async def purge_route_decisions(self, before: float) -> int:
        """Delete decisions older than ``before`` (feedback keeps its own copy); returns how many."""

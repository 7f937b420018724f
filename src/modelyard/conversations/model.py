"""The stored shapes of conversations and Responses-API responses (pure data, no I/O).

A stored message is in the **protocol-neutral form**: an OpenAI Chat Completions message dict
(``user`` / ``assistant`` with optional ``tool_calls`` / ``tool``), the one shape every protocol
the gateway speaks translates to and from (see :mod:`modelyard.translate`). System prompts are not
history: a conversation keeps its latest one apart (``system``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a conversation or stored response belongs to (copied from the creating key)."""

    key_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationScope:
    """What a caller may see: every field set must match (``key_ids``: any of them)."""

    key_ids: tuple[str, ...] | None = None
    team_id: str | None = None
    user_id: str | None = None
    org_id: str | None = None

    def allows(self, owner: Owner) -> bool:
        if self.key_ids is not None and owner.key_id not in self.key_ids:
            return False
        return all(
            mine is None or mine == theirs
            for mine, theirs in (
                (self.team_id, owner.team_id),
                (self.user_id, owner.user_id),
                (self.org_id, owner.org_id),
            )
        )


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    id: str
    owner: Owner
    created_at: float
    updated_at: float
    turns: int = 0
    """How many turns were appended so far (a turn: one request's new messages and its answer)."""
    system: str | None = None
    """The latest system prompt a request of this conversation gave (used when one gives none)."""


@dataclass(frozen=True, slots=True)
class ConversationItem:
    seq: int
    turn: int
    message: JSONDict
    """In the protocol-neutral form."""
    created_at: float


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """How one turn is appended (see :meth:`modelyard.store.base.Store.append_conversation`)."""

    now: float
    max_turns: int
    """Turns kept: older ones are dropped by this append."""
    system: str | None = None
    """A new system prompt for the conversation (None: keep the stored one)."""
    create_for: Owner | None = None
    """Create the conversation, owned by this, if it does not exist (its first turn)."""
    scope: ConversationScope | None = None
    """Append only if the stored owner is within this scope (else nothing is written)."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One ``/v1/responses`` answer kept for ``previous_response_id`` and ``GET /v1/responses/{id}``."""

    id: str
    owner: Owner
    created_at: float
    previous_response_id: str | None
    model: str
    messages: list[JSONDict]
    """This turn in the neutral form: the input messages, then the answer's."""
    response: JSONDict
    """The Responses-API object as it was returned."""
    input_items: list[JSONDict] = field(default_factory=list)
    """The request's ``input`` as items (for ``GET /v1/responses/{id}/input_items``)."""


__all__ = [
    "ConversationItem",
    "ConversationRecord",
    "ConversationScope",
    "JSONDict",
    "Owner",
    "StoredResponse",
    "TurnOptions",
]

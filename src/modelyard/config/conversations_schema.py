"""The ``conversations:`` section: server-side conversation history and stored responses."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConversationsConfig(BaseModel):
    """Server-side conversations (``conversation_id`` on ``/v1/chat/completions`` and
    ``/v1/messages``, header ``x-modelyard-conversation``) and ``/v1/responses`` with
    ``previous_response_id``: history lives in the ledger database (see docs/conversations.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Accept ``conversation_id`` and store ``/v1/responses`` answers (default true). When false,
    a request naming a conversation gets a 400, and responses are never stored."""
    retention_days: float = Field(30.0, gt=0)
    """Conversations not continued, and stored responses not created, for this long are purged in
    the background (default 30 days)."""
    max_turns: int = Field(200, ge=1, le=100_000)
    """Turns a conversation keeps (a turn: one request's new messages and its answer); older
    turns are dropped as new ones arrive (default 200)."""
    max_chain: int = Field(200, ge=1, le=10_000)
    """Most responses a ``previous_response_id`` chain is followed back (default 200)."""
    purge_interval_s: float = Field(3600.0, gt=0)
    """How often the retention purge runs, seconds (default 1 hour)."""


__all__ = ["ConversationsConfig"]

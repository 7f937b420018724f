"""The conversation service: expand a request's history from the store, append its answer after.

A request names its conversation with a top-level ``conversation_id`` string or the header
``x-modelyard-conversation`` (both: they must agree). Then:

1. :meth:`ConversationService.expand` (before admission) loads the conversation — creating it,
   owned by the caller, when the id is new — checks the caller may use it (one it may not see is
   a 404, exactly as if it did not exist) and puts the stored history before the request's
   messages, in the caller's protocol. The request's own system prompt, if any, replaces the
   stored one; otherwise the stored one is used.
2. Once the answer is complete, the new turn (the request's messages) and the answer are
   appended as one turn, atomically — before the client receives the answer's last byte (a
   plain answer: before any byte), so its next request always sees them.
3. A failed, cut or abandoned answer appends nothing: not the answer, and not the user's turn
   either, so the client can simply send the same turn again.

A request without a conversation costs one dict lookup and one header lookup.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from modelyard.config.conversations_schema import ConversationsConfig
from modelyard.conversations.collect import AnswerCollector
from modelyard.conversations.model import (
    ConversationRecord,
    ConversationScope,
    JSONDict,
    Owner,
    StoredResponse,
    TurnOptions,
)
from modelyard.conversations.neutral import answer_of_json, expanded_body, new_turn
from modelyard.conversations.retention import ConversationPurger
from modelyard.errors import InvalidRequestError, NotFoundError
from modelyard.providers.base import WireProtocol
from modelyard.store.base import Role, Store

log = logging.getLogger("modelyard.conversations")

CONVERSATION_HEADER = "x-modelyard-conversation"
CONVERSATION_FIELD = "conversation_id"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,199}$")
APPEND_ATTEMPTS = 3


def owner_of(principal: Any) -> Owner:
    key = getattr(principal, "key", None)
    if key is None:
        return Owner()
    return Owner(key.id, key.team_id, key.user_id, key.org_id)


def scope_of(principal: Any) -> ConversationScope:
    """The master key (or an open gateway) sees everything; a key-holder its own key's
    conversations (and those of the key it was rotated from); an admin or viewer key confined to
    an org, team or user that scope's."""
    key = getattr(principal, "key", None)
    if key is None:
        return ConversationScope()
    if principal.role is Role.KEY_HOLDER:
        previous = key.metadata.get("rotated_from") if isinstance(key.metadata, dict) else None
        ids = (key.id, previous) if isinstance(previous, str) else (key.id,)
        return ConversationScope(key_ids=ids)
    return ConversationScope(team_id=key.team_id, user_id=key.user_id, org_id=key.org_id)


def check_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidRequestError(
            f"'{param}' must be a string of 1 to 200 letters, digits and ._:@+=/- starting with a "
            "letter or digit (use an unguessable id, e.g. a UUID)",
            param=param,
        )
    return value


@dataclass(slots=True)
class PendingTurn:
    """What a request will append once its answer is complete."""

    conversation_id: str
    client: WireProtocol
    system: str | None
    messages: list[JSONDict]
    create_for: Owner | None
    """The caller, when the conversation is new: it is created with the first turn."""
    scope: ConversationScope


class ConversationService:
    """Conversation history for the chat APIs, and stored responses for ``/v1/responses``."""

    def __init__(
        self, store: Store, config: ConversationsConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self.append_failures = 0
        """Answers whose turn could not be stored (a metric; logged)."""
        self.purger = ConversationPurger(store, config, clock=clock)

    def start(self) -> None:
        """Start the background retention purge (the store must be open)."""
        self.purger.start()

    async def aclose(self) -> None:
        await self.purger.aclose()

    # -- the chat APIs ---------------------------------------------------------------------------
    def conversation_id(self, body: JSONDict, headers: dict[str, str]) -> str | None:
        in_body = body.get(CONVERSATION_FIELD)
        in_header = headers.get(CONVERSATION_HEADER)
        if in_body is None and in_header is None:
            return None
        if in_body is not None and in_header is not None and in_body != in_header:
            raise InvalidRequestError(
                f"'{CONVERSATION_FIELD}' and the {CONVERSATION_HEADER} header name different "
                "conversations; send one of them",
                param=CONVERSATION_FIELD,
            )
        if not self.config.enabled:
            raise InvalidRequestError(
                "server-side conversations are disabled on this gateway (conversations.enabled); "
                "send the whole history instead",
                param=CONVERSATION_FIELD,
            )
        return check_id(in_body if in_body is not None else in_header, CONVERSATION_FIELD)

    async def open(
        self, conversation_id: str, principal: Any
    ) -> tuple[ConversationRecord | None, list[JSONDict]]:
        """The conversation (None: new) and its history; 404 when the caller may not use it.

        A new conversation is not written yet: its first turn creates it, owned by the caller
        (so an answer that fails leaves nothing behind)."""
        loaded = await self.store.load_conversation(conversation_id)
        if loaded is None:
            return None, []
        record, stored = loaded
        if not scope_of(principal).allows(record.owner):
            raise NotFoundError(
                f"conversation {conversation_id!r} not found; a new id starts a new conversation",
                param=CONVERSATION_FIELD,
            )
        return record, [item.message for item in stored]

    async def expand(self, client: WireProtocol, body: JSONDict, ctx: Any) -> JSONDict:
        """``body`` with its conversation's history (unchanged when it names none)."""
        if CONVERSATION_FIELD not in body and CONVERSATION_HEADER not in ctx.headers:
            return body
        conversation_id = self.conversation_id(body, ctx.headers)
        if conversation_id is None:
            return body
        record, history = await self.open(conversation_id, ctx.principal)
        system, messages = new_turn(client, body)
        ctx.conversation = PendingTurn(
            conversation_id,
            client,
            system,
            messages,
            create_for=owner_of(ctx.principal) if record is None else None,
            scope=scope_of(ctx.principal),
        )
        stored_system = record.system if record is not None else None
        return expanded_body(client, body, system if system is not None else stored_system, history)

    async def record_answer(self, ctx: Any, raw: bytes) -> None:
        """Append the turn of a plain (non-streamed) answer; call before sending it."""
        pending: PendingTurn | None = getattr(ctx, "conversation", None)
        if pending is None:
            return
        answer = answer_of_json(pending.client, raw)
        if answer is not None:
            await self._append(pending, answer)

    def track_stream(self, ctx: Any, first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``rest`` passed through; a complete answer's turn is appended before its last event
        reaches the client."""
        pending: PendingTurn | None = getattr(ctx, "conversation", None)
        if pending is None:
            return rest
        collector = AnswerCollector(pending.client)
        collector.feed(first)
        return _AppendBefore(
            rest, collector, lambda: self._append(pending, collector.message()), collector.complete
        )

    async def _append(self, pending: PendingTurn, answer: JSONDict) -> None:
        messages = [*pending.messages, answer]
        for attempt in range(APPEND_ATTEMPTS):
            try:
                options = TurnOptions(
                    now=self._clock(),
                    max_turns=self.config.max_turns,
                    system=pending.system,
                    create_for=pending.create_for,
                    scope=pending.scope,
                )
                stored = await self.store.append_conversation(pending.conversation_id, messages, options)
            except Exception as exc:
                if attempt + 1 < APPEND_ATTEMPTS:
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                self.append_failures += 1
                log.error(
                    "conversation %s: the turn could not be stored (%r); the answer was still sent",
                    pending.conversation_id,
                    exc,
                )
                return
            if not stored:
                log.warning(
                    "conversation %s was deleted (or its new id taken by another key) while answering; "
                    "turn not stored",
                    pending.conversation_id,
                )
            return

    # -- stored responses (/v1/responses) --------------------------------------------------------
    async def response_history(self, response_id: str, principal: Any) -> list[JSONDict]:
        """The neutral messages of a ``previous_response_id`` chain, oldest first."""
        chain = await self.store.response_chain(response_id, self.config.max_chain)
        if not chain or not scope_of(principal).allows(chain[0].owner):
            raise InvalidRequestError(
                f"previous response {response_id!r} not found: it was never stored (store: false), "
                "was deleted or expired, or belongs to another key",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        scope = scope_of(principal)
        messages: list[JSONDict] = []
        for stored in reversed(chain):
            if scope.allows(stored.owner):
                messages.extend(stored.messages)
        return messages

    async def get_response(self, response_id: str, principal: Any) -> StoredResponse:
        chain = await self.store.response_chain(response_id, 1)
        if not chain or not scope_of(principal).allows(chain[0].owner):
            raise NotFoundError(f"response {response_id!r} not found", param="response_id")
        return chain[0]

    async def delete_response(self, response_id: str, principal: Any) -> None:
        await self.get_response(response_id, principal)
        await self.store.delete_response(response_id)

    async def save_response(self, response: StoredResponse) -> None:
        await self.store.put_response(response)


class _AppendBefore:
    """Passes a stream's chunks through; when the collector sees the answer complete, appends
    the turn before handing on the chunk that completed it (so the client's next request sees it)."""

    def __init__(
        self,
        rest: AsyncIterator[bytes],
        collector: AnswerCollector,
        append: Callable[[], Any],
        already_complete: bool,
    ) -> None:
        self._rest = rest
        self._collector = collector
        self._append = append
        self._pending_append = already_complete
        self._appended = False

    def __aiter__(self) -> _AppendBefore:
        return self

    async def __anext__(self) -> bytes:
        if self._pending_append and not self._appended:
            self._appended = True
            await self._append()
        chunk = await anext(self._rest)
        if not self._appended:
            self._collector.feed(chunk)
            if self._collector.complete:
                self._appended = True
                await self._append()
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()


__all__ = [
    "CONVERSATION_FIELD",
    "CONVERSATION_HEADER",
    "ConversationService",
    "PendingTurn",
    "owner_of",
    "scope_of",
]

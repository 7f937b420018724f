"""``/admin/conversations``: list, read and delete server-side conversations; run the purge.

=========================================  =======  ======  ====================
route                                      admin    viewer  key-holder
=========================================  =======  ======  ====================
GET    /admin/conversations                yes      yes     its own key's only
GET    /admin/conversations/{id}           yes      yes     its own key's only
DELETE /admin/conversations/{id}           yes      no      its own key's only
POST   /admin/conversations/purge          yes      no      no
=========================================  =======  ======  ====================

Admin and viewer keys confined to an org, team or user see only that scope. A conversation the
caller may not see is a 404, exactly like one that does not exist. ``GET /admin/conversations``
takes ``limit`` (1–1000, default 100) and ``before`` (unix seconds: the next page starts below
the last ``updated_at`` seen).
"""

from __future__ import annotations

from typing import Any

from modelyard.api.asgi import RequestContext, Send, send_json
from modelyard.conversations.model import ConversationRecord
from modelyard.conversations.service import ConversationService, scope_of
from modelyard.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from modelyard.policy.auth import Principal
from modelyard.store.base import Role

MAX_LIMIT = 1000


def conversation_view(record: ConversationRecord) -> dict[str, Any]:
    o = record.owner
    return {
        "id": record.id,
        "object": "conversation",
        "key_id": o.key_id,
        "team_id": o.team_id,
        "user_id": o.user_id,
        "org_id": o.org_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "turns": record.turns,
        "system": record.system,
    }


async def list_conversations(
    service: ConversationService, principal: Principal, query: dict[str, str], ctx: RequestContext, send: Send
) -> None:
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise InvalidRequestError(f"'limit' must be an integer from 1 to {MAX_LIMIT}", param="limit")
    before: float | None = None
    if query.get("before"):
        try:
            before = float(query["before"])
        except ValueError:
            raise InvalidRequestError("'before' must be unix seconds", param="before") from None
    records = await service.store.list_conversations(scope_of(principal), limit=int(limit), before=before)
    await send_json(send, 200, {"object": "list", "data": [conversation_view(r) for r in records]}, ctx)


async def _visible(service: ConversationService, principal: Principal, conversation_id: str) -> Any:
    loaded = await service.store.load_conversation(conversation_id)
    if loaded is None or not scope_of(principal).allows(loaded[0].owner):
        raise NotFoundError(f"conversation {conversation_id!r} not found")
    return loaded


async def get_conversation(
    service: ConversationService, principal: Principal, conversation_id: str, ctx: RequestContext, send: Send
) -> None:
    record, items = await _visible(service, principal, conversation_id)
    view = conversation_view(record)
    view["messages"] = [
        {"seq": i.seq, "turn": i.turn, "created_at": i.created_at, **i.message} for i in items
    ]
    await send_json(send, 200, view, ctx)


async def delete_conversation(
    service: ConversationService, principal: Principal, conversation_id: str, ctx: RequestContext, send: Send
) -> None:
    if principal.role is Role.VIEWER:
        raise PermissionDeniedError("deleting a conversation needs role admin (or the key that owns it)")
    await _visible(service, principal, conversation_id)
    await service.store.delete_conversation(conversation_id)
    await send_json(
        send, 200, {"id": conversation_id, "object": "conversation.deleted", "deleted": True}, ctx
    )


async def purge(
    service: ConversationService, principal: Principal, body: dict[str, Any], ctx: RequestContext, send: Send
) -> None:
    """Run the retention purge now (``older_than_days``: instead of ``conversations.retention_days``)."""
    if principal.role is not Role.ADMIN or (
        principal.key is not None and scope_of(principal) != scope_of(None)
    ):
        raise PermissionDeniedError("the conversation purge needs the master key or an unconfined admin key")
    days = body.get("older_than_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days < 0):
        raise InvalidRequestError("'older_than_days' must be a non-negative number", param="older_than_days")
    purged = await service.purger.purge_now(None if days is None else float(days))
    await send_json(send, 200, {"purged": purged}, ctx)


__all__ = ["delete_conversation", "get_conversation", "list_conversations", "purge"]

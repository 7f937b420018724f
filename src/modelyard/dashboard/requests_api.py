"""``GET /admin/requests`` and ``GET /admin/requests/{request_id}``: search the stored request log.

=====================================  =======  ======  ====================
route                                  admin    viewer  key-holder
=====================================  =======  ======  ====================
GET /admin/requests                    yes      yes     its own key's only
GET /admin/requests/{request_id}       yes      yes     its own key's only
=====================================  =======  ======  ====================

Query parameters of the search (all optional): ``since``/``until`` (unix seconds, or a duration
ago like ``15m``, ``24h``, ``7d``; default the last 24 h), ``key``, ``team``, ``model``,
``deployment``, ``status`` (``200``, ``5xx``, ``ok``, ``error``, ``errors``...), ``q`` (text in
stored prompts and answers only) and ``limit`` (1–1000, default 100). Admin and viewer keys
confined to an org/team/user see only that scope, as with ``/admin/ledger``.
"""

from __future__ import annotations

import time
from typing import Any

from modelyard.api.admin import nano_to_usd
from modelyard.api.asgi import RequestContext, Send, send_json
from modelyard.dashboard.visibility import visibility_for
from modelyard.errors import InvalidRequestError, NotFoundError
from modelyard.policy.auth import Principal
from modelyard.store.base import AttemptRow, Store
from modelyard.store.requestlog import RequestQuery, RequestRow

DEFAULT_SINCE_S = 86400.0
MAX_LIMIT = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def time_param(query: dict[str, str], name: str, default: float | None, now: float) -> float | None:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    if raw[-1] in _UNITS and raw[:-1].isdigit():
        return now - int(raw[:-1]) * _UNITS[raw[-1]]
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequestError(
            f"'{name}' must be unix seconds or a duration ago like 15m, 24h, 7d", param=name
        ) from None


def parse_search(query: dict[str, str], principal: Principal, now: float | None = None) -> RequestQuery:
    """A :class:`RequestQuery` from query parameters, confined to what ``principal`` may see."""
    at = time.time() if now is None else now
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise InvalidRequestError(f"'limit' must be an integer from 1 to {MAX_LIMIT}", param="limit")
    text = query.get("q") or None
    if text is not None and len(text) > 500:
        raise InvalidRequestError("'q' must be at most 500 characters", param="q")
    return RequestQuery(
        since=time_param(query, "since", at - DEFAULT_SINCE_S, at),
        until=time_param(query, "until", None, at),
        key_id=query.get("key") or None,
        team_id=query.get("team") or None,
        model=query.get("model") or None,
        deployment=query.get("deployment") or None,
        status=query.get("status") or None,
        text=text,
        limit=int(limit),
        visibility=visibility_for(principal),
    )


def request_view(row: RequestRow, *, bodies: bool) -> dict[str, Any]:
    view = row.view()
    view["cost_usd"] = nano_to_usd(row.cost_nano)
    if not bodies:
        view.pop("prompt", None)
        view.pop("response", None)
    return view


def attempt_view(row: AttemptRow) -> dict[str, Any]:
    view: dict[str, Any] = {name: getattr(row, name) for name in row.__slots__}
    view["tags"] = list(row.tags)
    view["cost_usd"] = nano_to_usd(row.cost_nano)
    return view


async def search(
    store: Store, principal: Principal, query: dict[str, str], ctx: RequestContext, send: Send
) -> None:
    search_query = parse_search(query, principal)
    rows = await store.search_requests(search_query)
    body: dict[str, Any] = {"data": [request_view(r, bodies=False) for r in rows]}
    if len(rows) == search_query.limit:
        body["next_until"] = rows[-1].created_at  # pass as ``until`` for the next page
    await send_json(send, 200, body, ctx)


async def detail(
    store: Store, principal: Principal, request_id: str, ctx: RequestContext, send: Send
) -> None:
    row = await store.request_by_id(request_id, visibility_for(principal))
    if row is None:
        raise NotFoundError(f"no stored request {request_id!r} (GET /admin/requests searches them)")
    attempts = await store.ledger_rows(request_id=request_id, limit=100)
    await send_json(
        send,
        200,
        {"request": request_view(row, bodies=True), "ledger": [attempt_view(a) for a in attempts]},
        ctx,
    )

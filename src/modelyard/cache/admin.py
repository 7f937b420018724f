"""``/admin/cache``: what the response cache holds, and emptying it.

===========================  =======  ======  ==========
route                        admin    viewer  key-holder
===========================  =======  ======  ==========
GET  /admin/cache            yes      yes     no
POST /admin/cache/clear      yes*     no      no
===========================  =======  ======  ==========

\\* the master key, or an admin key not confined to an org, team or user: clearing is
gateway-wide (every tenant's answers; with Redis, every replica's).
"""

from __future__ import annotations

from typing import Any

from modelyard.api.admin import require_reader
from modelyard.api.asgi import RequestContext, Send, send_json
from modelyard.cache.service import ResponseCache
from modelyard.errors import PermissionDeniedError
from modelyard.policy.auth import Principal
from modelyard.store.base import Role

__all__ = ["clear", "stats"]


async def stats(cache: ResponseCache | None, principal: Principal, ctx: RequestContext, send: Send) -> None:
    require_reader(principal)
    body: dict[str, Any] = {"enabled": cache is not None}
    if cache is not None:
        body |= {
            "backend": cache.backend.name,
            "entries": await cache.backend.count(),
            "semantic_entries": len(cache.index) if cache.index is not None else None,
            "semantic_partitions": cache.index.partitions() if cache.index is not None else None,
            "models": {
                name: {
                    "ttl_s": policy.ttl_s,
                    "semantic": policy.semantic,
                    "threshold": policy.threshold if policy.semantic else None,
                    "include_tools": policy.include_tools if policy.semantic else None,
                }
                for name, policy in sorted(cache.policies.items())
            },
        }
    await send_json(send, 200, body, ctx)


async def clear(cache: ResponseCache | None, principal: Principal, ctx: RequestContext, send: Send) -> None:
    key = principal.key
    if principal.role is not Role.ADMIN or (
        key is not None and any(getattr(key, f, None) for f in ("org_id", "team_id", "user_id"))
    ):
        raise PermissionDeniedError(
            "clearing the response cache empties it for every tenant: use the master key or an "
            "admin key that is not confined to an org, team or user"
        )
    dropped = 0
    if cache is not None:
        await cache.drain()
        dropped = await cache.backend.clear()
        if cache.index is not None:
            cache.index.clear()
    await send_json(send, 200, {"cleared": dropped}, ctx)

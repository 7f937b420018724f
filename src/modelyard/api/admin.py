"""The admin API: keys, budgets, spend reports, the ledger and live deployment state.

Roles (a key's role; the master key is an admin with no limits):

=================================  =======  ======  ==========
route                              admin    viewer  key-holder
=================================  =======  ======  ==========
GET  /admin/deployments            yes      yes     no
GET  /admin/keys, /admin/keys/{id} yes      yes     no
GET  /admin/keys/self              yes      yes     yes (its own)
POST /admin/keys                   yes      no      no
POST /admin/keys/{id}/revoke       yes      no      no
POST /admin/keys/{id}/rotate       yes      no      no
GET  /admin/budgets                yes      yes     its own
PUT / DELETE /admin/budgets        yes      no      no
GET  /admin/spend                  yes      yes     its own
GET  /admin/ledger                 yes      yes     no
=================================  =======  ======  ==========

An admin *virtual* key is confined to its own scope: what it creates or changes stays inside its
org/team, with models, limits and expiry no wider than its own, and a role no higher.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from modelyard.api.asgi import RequestContext, Send, send_json
from modelyard.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from modelyard.policy.auth import Principal
from modelyard.policy.keys import generate_key, hash_key, key_hint
from modelyard.store.base import NANO_PER_USD, BudgetSpec, KeyRecord, Period, Role, Scope, Store

ROLE_RANK = {Role.KEY_HOLDER: 0, Role.VIEWER: 1, Role.ADMIN: 2}
DEFAULT_ROTATION_OVERLAP_S = 24 * 3600.0
GROUPS = ("key", "team", "user", "org", "model", "deployment", "tag", "status")


def usd_to_nano(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequestError(
            f"'{field}' must be a number of US dollars, e.g. 10 or \"2.50\"", param=field
        )
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequestError(
            f"'{field}' must be a number of US dollars, got {value!r}", param=field
        ) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequestError(f"'{field}' must be a non-negative amount of US dollars", param=field)
    return int(amount * NANO_PER_USD)


def nano_to_usd(nano: int) -> str:
    return f"{Decimal(nano) / NANO_PER_USD:.9f}".rstrip("0").rstrip(".") if nano else "0"


def key_view(record: KeyRecord) -> dict[str, Any]:
    """A key as the API shows it: never the key or its hash."""
    return {
        "id": record.id,
        "hint": record.hint,
        "name": record.name,
        "role": record.role.value,
        "org_id": record.org_id,
        "team_id": record.team_id,
        "user_id": record.user_id,
        "tags": list(record.tags),
        "models": None if record.models is None else list(record.models),
        "max_tokens": record.max_tokens,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "store_prompts": record.store_prompts,
        "metadata": record.metadata,
    }


def _require(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        needed = " or ".join(r.value for r in roles)
        raise PermissionDeniedError(f"this route needs role {needed}; this key is {principal.role.value}")


def require_reader(principal: Principal) -> None:
    """Admins and viewers may read gateway-wide state."""
    _require(principal, Role.ADMIN, Role.VIEWER)


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"'{name}' must be a non-negative integer", param=name)
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
        raise InvalidRequestError(f"'{name}' must be a string of 1 to 200 characters", param=name)
    return value


def _str_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequestError(f"'{name}' must be an array of non-empty strings", param=name)
    return value


class AdminAPI:
    """Handlers for /admin/*; each checks the caller's role first."""

    def __init__(self, store: Store, on_key_change: Any = None) -> None:
        self._store = store
        self._on_key_change = on_key_change

    # -- scope rules -------------------------------------------------------------------------
    @staticmethod
    def _within_scope(principal: Principal, record: KeyRecord) -> bool:
        mine = principal.key
        if mine is None:
            return True
        if mine.org_id is not None and record.org_id != mine.org_id:
            return False
        if mine.team_id is not None and record.team_id != mine.team_id:
            return False
        return not (mine.user_id is not None and record.user_id != mine.user_id)

    def _narrow(self, principal: Principal, record: KeyRecord) -> None:
        """Refuse a key wider than its creator (a non-master admin key)."""
        mine = principal.key
        if mine is None:
            return
        problems = []
        if ROLE_RANK[record.role] > ROLE_RANK[mine.role]:
            problems.append(f"role {record.role.value} is above yours")
        if not self._within_scope(principal, record):
            problems.append("org/team/user outside your own")
        if mine.models is not None and (record.models is None or not set(record.models) <= set(mine.models)):
            problems.append("models beyond yours")
        for name in ("max_tokens", "rpm", "tpm"):
            cap, asked = getattr(mine, name), getattr(record, name)
            if cap is not None and (asked is None or asked > cap):
                problems.append(f"{name} above your {cap}")
        if mine.expires_at is not None and (record.expires_at is None or record.expires_at > mine.expires_at):
            problems.append("an expiry later than yours")
        if problems:
            raise PermissionDeniedError("a key cannot be wider than its creator's: " + "; ".join(problems))

    # -- keys --------------------------------------------------------------------------------
    async def create_key(
        self, principal: Principal, body: dict[str, Any], ctx: RequestContext, send: Send
    ) -> None:
        _require(principal, Role.ADMIN)
        role_name = body.get("role", Role.KEY_HOLDER.value)
        try:
            role = Role(role_name)
        except ValueError:
            raise InvalidRequestError("'role' must be admin, viewer or key-holder", param="role") from None
        now = time.time()
        expires_at: float | None = None
        if body.get("expires_in_s") is not None:
            seconds = _optional_int(body, "expires_in_s")
            expires_at = now + float(seconds or 0)
        mine = principal.key
        key = generate_key()
        tags = _str_list(body, "tags") or []
        models = _str_list(body, "models")
        record = KeyRecord(
            id="key_" + uuid.uuid4().hex[:20],
            hash=hash_key(key),
            hint=key_hint(key),
            role=role,
            name=_optional_str(body, "name"),
            org_id=_optional_str(body, "org_id") or (mine.org_id if mine else None),
            team_id=_optional_str(body, "team_id") or (mine.team_id if mine else None),
            user_id=_optional_str(body, "user_id") or (mine.user_id if mine else None),
            tags=tuple(tags),
            models=None if models is None else tuple(models),
            max_tokens=_optional_int(body, "max_tokens"),
            rpm=_optional_int(body, "rpm"),
            tpm=_optional_int(body, "tpm"),
            expires_at=expires_at,
            revoked_at=None,
            created_at=now,
            created_by=principal.key_id,
            store_prompts=bool(body.get("store_prompts", False)),
            metadata=dict(body["metadata"]) if isinstance(body.get("metadata"), dict) else {},
        )
        self._narrow(principal, record)
        budgets = self._budget_specs(body.get("budgets"), Scope.KEY, record.id)
        await self._store.insert_key(record)
        for spec in budgets:
            await self._store.set_budget(spec)
        await send_json(
            send,
            201,
            {
                "key": key,
                **key_view(record),
                "budgets": [self._budget_view_spec(s) for s in budgets],
                "note": "store this key now: it is shown only once",
            },
            ctx,
        )

    @staticmethod
    def _budget_specs(raw: Any, scope: Scope, scope_id: str) -> list[BudgetSpec]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise InvalidRequestError("'budgets' must be an array of {period, limit_usd}", param="budgets")
        specs = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise InvalidRequestError(f"'budgets[{i}]' must be {{period, limit_usd}}", param="budgets")
            try:
                period = Period(item.get("period", "total"))
            except ValueError:
                raise InvalidRequestError(
                    "budget 'period' must be daily, monthly or total", param="budgets"
                ) from None
            specs.append(
                BudgetSpec(
                    scope, scope_id, period, usd_to_nano(item.get("limit_usd"), f"budgets[{i}].limit_usd")
                )
            )
        return specs

    @staticmethod
    def _budget_view_spec(spec: BudgetSpec) -> dict[str, Any]:
        return {
            "scope": spec.scope.value,
            "scope_id": spec.scope_id,
            "period": spec.period.value,
            "limit_usd": nano_to_usd(spec.limit_nano),
        }

    async def _key_in_scope(self, principal: Principal, key_id: str) -> KeyRecord:
        record = await self._store.key_by_id(key_id)
        if record is None or not self._within_scope(principal, record):
            raise NotFoundError(f"no key {key_id!r} (GET /admin/keys lists them)")
        return record

    async def list_keys(
        self, principal: Principal, query: dict[str, str], ctx: RequestContext, send: Send
    ) -> None:
        _require(principal, Role.ADMIN, Role.VIEWER)
        records = await self._store.list_keys(
            team_id=query.get("team"),
            user_id=query.get("user"),
            org_id=query.get("org"),
            include_revoked=query.get("include_revoked") in ("1", "true"),
        )
        await send_json(
            send, 200, {"data": [key_view(r) for r in records if self._within_scope(principal, r)]}, ctx
        )

    async def get_key(self, principal: Principal, key_id: str, ctx: RequestContext, send: Send) -> None:
        if key_id == "self":
            if principal.key is None:
                raise InvalidRequestError(
                    "the master key has no record; /admin/keys/self is for virtual keys"
                )
            await send_json(send, 200, key_view(principal.key), ctx)
            return
        _require(principal, Role.ADMIN, Role.VIEWER)
        await send_json(send, 200, key_view(await self._key_in_scope(principal, key_id)), ctx)

    async def revoke_key(self, principal: Principal, key_id: str, ctx: RequestContext, send: Send) -> None:
        _require(principal, Role.ADMIN)
        record = await self._key_in_scope(principal, key_id)
        await self._store.revoke_key(record.id, time.time())
        if self._on_key_change is not None:
            self._on_key_change(record.hash)
        await send_json(send, 200, {"id": record.id, "revoked": True}, ctx)

    async def rotate_key(
        self, principal: Principal, key_id: str, body: dict[str, Any], ctx: RequestContext, send: Send
    ) -> None:
        """A new key with the same grants; the old one keeps working for ``overlap_s`` (default 24 h)."""
        _require(principal, Role.ADMIN)
        old = await self._key_in_scope(principal, key_id)
        overlap = body.get("overlap_s", DEFAULT_ROTATION_OVERLAP_S)
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0:
            raise InvalidRequestError(
                "'overlap_s' must be a non-negative number of seconds", param="overlap_s"
            )
        key = generate_key()
        now = time.time()
        new = KeyRecord(
            **{
                **_record_fields(old),
                "id": "key_" + uuid.uuid4().hex[:20],
                "hash": hash_key(key),
                "hint": key_hint(key),
                "created_at": now,
                "created_by": principal.key_id,
                "revoked_at": None,
                "metadata": {**old.metadata, "rotated_from": old.id},
            }
        )
        await self._store.insert_key(new)
        for state in await self._store.budgets(Scope.KEY, old.id):
            await self._store.set_budget(
                BudgetSpec(Scope.KEY, new.id, state.spec.period, state.spec.limit_nano)
            )
        await self._store.revoke_key(old.id, now + float(overlap))
        if self._on_key_change is not None:
            self._on_key_change(old.hash)
        await send_json(
            send,
            201,
            {
                "key": key,
                **key_view(new),
                "old_key_valid_until": now + float(overlap),
                "note": "store this key now: it is shown only once",
            },
            ctx,
        )

    # -- budgets -----------------------------------------------------------------------------
    def _check_budget_scope(self, principal: Principal, scope: Scope, scope_id: str) -> None:
        mine = principal.key
        if mine is None or (
            principal.role is Role.ADMIN and not (mine.org_id or mine.team_id or mine.user_id)
        ):
            return  # the master key, or an admin key not confined to an org/team/user
        allowed = {(Scope.KEY, mine.id)}
        if mine.team_id:
            allowed.add((Scope.TEAM, mine.team_id))
        if mine.user_id:
            allowed.add((Scope.USER, mine.user_id))
        if mine.org_id:
            allowed.add((Scope.ORG, mine.org_id))
        if (scope, scope_id) not in allowed:
            raise PermissionDeniedError("you can only see or set budgets of your own key, user, team or org")

    async def budgets(
        self, principal: Principal, query: dict[str, str], ctx: RequestContext, send: Send
    ) -> None:
        scope = Scope(query["scope"]) if query.get("scope") in {s.value for s in Scope} else None
        scope_id = query.get("scope_id")
        if principal.role is Role.KEY_HOLDER:
            assert principal.key is not None
            scope, scope_id = Scope.KEY, principal.key.id
        states = await self._store.budgets(scope, scope_id)
        if principal.key is not None and principal.role is not Role.KEY_HOLDER:
            states = [s for s in states if self._budget_visible(principal, s.spec)]
        await send_json(
            send,
            200,
            {
                "data": [
                    {
                        **self._budget_view_spec(s.spec),
                        "spend_usd": nano_to_usd(s.spend_nano),
                        "reserved_usd": nano_to_usd(s.reserved_nano),
                        "period_start": s.period_start,
                        "remaining_usd": nano_to_usd(
                            max(0, s.spec.limit_nano - s.spend_nano - s.reserved_nano)
                        ),
                    }
                    for s in states
                ]
            },
            ctx,
        )

    def _budget_visible(self, principal: Principal, spec: BudgetSpec) -> bool:
        try:
            self._check_budget_scope(principal, spec.scope, spec.scope_id)
        except PermissionDeniedError:
            return (
                principal.key is not None and principal.key.team_id is None and principal.key.org_id is None
            )
        return True

    async def set_budget(
        self,
        principal: Principal,
        body: dict[str, Any],
        ctx: RequestContext,
        send: Send,
        *,
        delete: bool = False,
    ) -> None:
        _require(principal, Role.ADMIN)
        try:
            scope = Scope(str(body.get("scope")))
            period = Period(str(body.get("period", "total")))
        except ValueError:
            raise InvalidRequestError(
                "'scope' must be key, user, team or org; 'period' daily, monthly or total"
            ) from None
        scope_id = _optional_str(body, "scope_id")
        if scope_id is None:
            raise InvalidRequestError(
                "'scope_id' is required (the key, user, team or org id)", param="scope_id"
            )
        self._check_budget_scope(principal, scope, scope_id)
        if delete:
            found = await self._store.delete_budget(scope, scope_id, period)
            await send_json(send, 200, {"deleted": found}, ctx)
            return
        spec = BudgetSpec(scope, scope_id, period, usd_to_nano(body.get("limit_usd"), "limit_usd"))
        await self._store.set_budget(spec)
        await send_json(send, 200, self._budget_view_spec(spec), ctx)

    # -- reports -----------------------------------------------------------------------------
    async def spend(
        self, principal: Principal, query: dict[str, str], ctx: RequestContext, send: Send
    ) -> None:
        group_by = query.get("by", "model")
        if group_by not in GROUPS:
            raise InvalidRequestError(f"'by' must be one of {', '.join(GROUPS)}", param="by")
        since = _time_param(query, "since", default=time.time() - 7 * 86400) or 0.0
        until = _time_param(query, "until", default=None)
        filters = {
            k: v
            for k, v in query.items()
            if k in ("key", "team", "user", "org", "model", "deployment", "tag")
        }
        if principal.role is Role.KEY_HOLDER:
            assert principal.key is not None
            filters["key"] = principal.key.id
        elif principal.key is not None:
            for name in ("org", "team", "user"):
                mine = getattr(principal.key, f"{name}_id")
                if mine is not None:
                    filters[name] = mine
        rows = await self._store.spend_report(group_by=group_by, since=since, until=until, filters=filters)
        for row in rows:
            for field in ("cost_nano", "local_cost_nano"):
                row[field.replace("_nano", "_usd")] = nano_to_usd(int(row.get(field) or 0))
        await send_json(
            send, 200, {"by": group_by, "since": since, "until": until, "filters": filters, "data": rows}, ctx
        )

    async def ledger(
        self, principal: Principal, query: dict[str, str], ctx: RequestContext, send: Send
    ) -> None:
        _require(principal, Role.ADMIN, Role.VIEWER)
        limit = query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 10_000:
            raise InvalidRequestError("'limit' must be an integer from 1 to 10000", param="limit")
        rows = await self._store.ledger_rows(
            since=_time_param(query, "since", default=None),
            request_id=query.get("request_id"),
            limit=int(limit),
        )
        await send_json(
            send,
            200,
            {"data": [_row_view(r) for r in rows if principal.key is None or _row_in_scope(principal, r)]},
            ctx,
        )


def _record_fields(record: KeyRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def _row_in_scope(principal: Principal, row: Any) -> bool:
    mine = principal.key
    assert mine is not None
    return all(
        getattr(mine, f) is None or getattr(row, f) == getattr(mine, f)
        for f in ("org_id", "team_id", "user_id")
    )


def _row_view(row: Any) -> dict[str, Any]:
    view = {name: getattr(row, name) for name in row.__slots__}
    view["tags"] = list(row.tags)
    view["cost_usd"] = nano_to_usd(row.cost_nano)
    return view


def _time_param(query: dict[str, str], name: str, default: float | None) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    try:
        if raw[-1] in units and raw[:-1].isdigit():
            return time.time() - int(raw[:-1]) * units[raw[-1]]
        return float(raw)
    except ValueError:
        raise InvalidRequestError(
            f"'{name}' must be unix seconds or a duration ago like 15m, 24h, 7d", param=name
        ) from None


def parse_query(query_string: bytes) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query_string.decode("latin-1")).items()}

"""What the SQL backends share: columns, record <-> row conversion and the report query."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from modelyard.store._ledger import ReservationRow, budget_keys
from modelyard.store.base import AttemptRow, KeyRecord, Reservation, Role

KEY_COLUMNS = (
    "id",
    "hash",
    "hint",
    "role",
    "name",
    "org_id",
    "team_id",
    "user_id",
    "tags",
    "models",
    "max_tokens",
    "rpm",
    "tpm",
    "expires_at",
    "revoked_at",
    "created_at",
    "created_by",
    "store_prompts",
    "metadata",
)

LEDGER_COLUMNS = (
    "request_id",
    "attempt",
    "key_id",
    "team_id",
    "user_id",
    "org_id",
    "tags",
    "model_requested",
    "deployment",
    "route_reason",
    "local",
    "tokens_in",
    "tokens_out",
    "tokens_cache_read",
    "tokens_cache_write",
    "cost_nano",
    "status",
    "http_status",
    "latency_ms",
    "ttft_ms",
    "created_at",
)

RESERVATION_COLUMNS = (
    "request_id",
    "status",
    "max_cost_nano",
    "budgets",
    "key_id",
    "team_id",
    "user_id",
    "org_id",
    "tags",
    "model",
    "created_at",
    "deadline_at",
)

GROUP_COLUMNS = {
    "key": "key_id",
    "team": "team_id",
    "user": "user_id",
    "org": "org_id",
    "model": "model_requested",
    "deployment": "deployment",
    "status": "status",
}
"""``spend_report`` group_by / filter names and their ledger columns; ``tag`` is handled apart."""

REPORT_FIELDS = (
    "group",
    "requests",
    "tokens_in",
    "tokens_out",
    "cost_nano",
    "local_requests",
    "local_tokens",
    "local_cost_nano",
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(name: str, what: str) -> str:
    """A schema or table name we interpolate into SQL: letters, digits and underscores only."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits and underscores (not starting with a digit)"
        )
    return name


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def key_to_row(record: KeyRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.hash,
        record.hint,
        str(record.role),
        record.name,
        record.org_id,
        record.team_id,
        record.user_id,
        dumps(list(record.tags)),
        None if record.models is None else dumps(list(record.models)),
        record.max_tokens,
        record.rpm,
        record.tpm,
        record.expires_at,
        record.revoked_at,
        record.created_at,
        record.created_by,
        bool(record.store_prompts),
        dumps(record.metadata),
    )


def key_from_row(row: Sequence[Any]) -> KeyRecord:
    (id_, hash_, hint, role, name, org, team, user, tags, models, max_tokens, rpm, tpm) = row[:13]
    (expires_at, revoked_at, created_at, created_by, store_prompts, metadata) = row[13:19]
    return KeyRecord(
        id=id_,
        hash=hash_,
        hint=hint,
        role=Role(role),
        name=name,
        org_id=org,
        team_id=team,
        user_id=user,
        tags=tuple(orjson.loads(tags)),
        models=None if models is None else tuple(orjson.loads(models)),
        max_tokens=max_tokens,
        rpm=rpm,
        tpm=tpm,
        expires_at=expires_at,
        revoked_at=revoked_at,
        created_at=created_at,
        created_by=created_by,
        store_prompts=bool(store_prompts),
        metadata=orjson.loads(metadata),
    )


def attempt_to_row(row: AttemptRow, tags: Callable[[tuple[str, ...]], Any]) -> tuple[Any, ...]:
    """Ledger column values; ``tags`` encodes the tag tuple for the backend (JSON text, array)."""
    return (
        row.request_id,
        row.attempt,
        row.key_id,
        row.team_id,
        row.user_id,
        row.org_id,
        tags(row.tags),
        row.model_requested,
        row.deployment,
        row.route_reason,
        bool(row.local),
        row.tokens_in,
        row.tokens_out,
        row.tokens_cache_read,
        row.tokens_cache_write,
        row.cost_nano,
        row.status,
        row.http_status,
        row.latency_ms,
        row.ttft_ms,
        row.created_at,
    )


def attempt_from_row(row: Sequence[Any], tags: Callable[[Any], tuple[str, ...]]) -> AttemptRow:
    values = list(row)
    values[6] = tags(values[6])
    values[10] = bool(values[10])
    return AttemptRow(*values)


def tags_to_json(tags: tuple[str, ...]) -> str:
    return dumps(list(tags))


def tags_from_json(text: str) -> tuple[str, ...]:
    return tuple(orjson.loads(text))


def report_sql(
    *,
    table: str,
    group_by: str,
    since: float,
    until: float | None,
    filters: dict[str, str] | None,
    placeholder: Callable[[int], str],
    tag_source: str,
    tag_filter: Callable[[str], str],
) -> tuple[str, list[Any]]:
    """The ``spend_report`` query over ledger rows ``l``. ``tag_source``: a FROM item, aliased ``t``,
    yielding ``t.value`` once per tag of ``l.tags``; ``tag_filter(p)``: an expression true when ``l``
    has the tag in placeholder ``p``."""
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return placeholder(len(params))

    if group_by == "tag":
        source, group = f"{table} AS l CROSS JOIN {tag_source}", "t.value"
    elif group_by in GROUP_COLUMNS:
        source, group = f"{table} AS l", f"l.{GROUP_COLUMNS[group_by]}"
    else:
        raise ValueError(f"cannot group spend by {group_by!r}: use one of {', '.join(report_groups())}")
    where = [f"l.created_at >= {param(since)}"]
    if group_by != "status" and "status" not in (filters or {}):
        # Requests refused before any attempt (status 'refused', cost 0) are counted only when
        # asked for by status: a spend report's request counts are requests that were served.
        where.append("l.status <> 'refused'")
    if until is not None:
        where.append(f"l.created_at < {param(until)}")
    for name, value in sorted((filters or {}).items()):
        if name == "tag":
            where.append(tag_filter(param(value)))
        elif name in GROUP_COLUMNS:
            where.append(f"l.{GROUP_COLUMNS[name]} = {param(value)}")
        else:
            raise ValueError(f"cannot filter spend by {name!r}: use one of {', '.join(report_groups())}")
    sql = f"""
        SELECT {group} AS grp,
               COUNT(DISTINCT l.request_id),
               SUM(l.tokens_in),
               SUM(l.tokens_out),
               SUM(l.cost_nano),
               COUNT(DISTINCT CASE WHEN l.local THEN l.request_id END),
               SUM(CASE WHEN l.local THEN l.tokens_in + l.tokens_out ELSE 0 END),
               SUM(CASE WHEN l.local THEN l.cost_nano ELSE 0 END)
        FROM {source}
        WHERE {" AND ".join(where)}
        GROUP BY {group}
        ORDER BY SUM(l.cost_nano) DESC, grp
    """
    return sql, params


def report_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Report rows as dicts; sums come back as int whatever the driver's type (NULL: 0)."""
    return [
        {
            "group": row[0],
            **{name: int(value or 0) for name, value in zip(REPORT_FIELDS[1:], row[1:], strict=True)},
        }
        for row in rows
    ]


def report_groups() -> list[str]:
    return [*GROUP_COLUMNS, "tag"]


def reservation_from_row(row: tuple[Any, ...]) -> ReservationRow:
    (request_id, status, max_cost, budgets, key, team, user, org, tags, model, created, deadline) = row
    return ReservationRow(
        request_id=request_id,
        max_cost_nano=max_cost,
        budgets=tuple((scope, scope_id) for scope, scope_id in orjson.loads(budgets)),
        status=status,
        key_id=key,
        team_id=team,
        user_id=user,
        org_id=org,
        tags=tags_from_json(tags),
        model=model,
        created_at=created,
        deadline_at=deadline,
    )


def reservation_to_row(r: Reservation) -> tuple[Any, ...]:
    return (
        r.request_id,
        "pending",
        r.max_cost_nano,
        dumps([list(key) for key in budget_keys(r.budgets)]),
        r.key_id,
        r.team_id,
        r.user_id,
        r.org_id,
        tags_to_json(r.tags),
        r.model,
        r.created_at,
        r.deadline_at,
    )

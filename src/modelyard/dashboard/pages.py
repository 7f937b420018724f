"""The dashboard's pages, each an async function returning (title, body HTML).

Numbers come from :mod:`modelyard.dashboard.data`; every value is escaped on its way into HTML
(``esc``/``cell``); values tagged ``data-metric`` are the ones tests compare with the database.
"""

from __future__ import annotations

from typing import Any

from modelyard.dashboard import data
from modelyard.dashboard.charts import bar_chart, line_chart
from modelyard.dashboard.html import RANGES, card, cell, esc, link, ms, num, pct, table, usd, when
from modelyard.dashboard.requests_api import parse_search
from modelyard.dashboard.visibility import visibility_for
from modelyard.policy.auth import Principal
from modelyard.state import AppState
from modelyard.store.base import BudgetState, KeyRecord, Scope
from modelyard.store.requestlog import Visibility

Page = tuple[str, str]


async def _keys(state: AppState) -> dict[str, KeyRecord]:
    return {k.id: k for k in await state.store.list_keys(include_revoked=True)}


def _key_label(keys: dict[str, KeyRecord], key_id: str | None) -> str:
    if not key_id:
        return "(master / none)"
    record = keys.get(key_id)
    if record is None:
        return key_id
    return f"{record.name} ({record.hint})" if record.name else record.hint


async def overview(state: AppState, principal: Principal, window: data.Window) -> Page:
    vis = visibility_for(principal)
    total = await data.totals(state.store, window, vis)
    span = max(1.0, window.until - window.since)
    cards = "".join(
        [
            card("requests", num(total.requests), "total-requests"),
            card("errors", num(total.errors), "total-errors"),
            card("error rate", pct(total.errors, total.requests), "error-rate"),
            card("requests / s", num(total.requests / span, 3), "requests-per-s"),
            card("tokens in", num(total.tokens_in), "tokens-in"),
            card("tokens out", num(total.tokens_out), "tokens-out"),
            card("cost", usd(total.cost_nano), "total-cost"),
        ]
    )
    buckets, rows = await data.series(state.store, window, vis)
    per_bucket = rows.get("", {})
    res = float(window.res)
    req_chart = line_chart(
        buckets,
        [
            ("requests/s", data.values(buckets, per_bucket, "requests", res)),
            ("errors/s", data.values(buckets, per_bucket, "errors", res)),
        ],
        unit="/s",
        chart_id="chart-requests",
    )
    token_chart = line_chart(
        buckets,
        [
            ("tokens in", data.values(buckets, per_bucket, "tokens_in")),
            ("tokens out", data.values(buckets, per_bucket, "tokens_out")),
        ],
        chart_id="chart-tokens",
    )
    cost_chart = line_chart(
        buckets,
        [("cost (USD)", data.values(buckets, per_bucket, "cost_nano", 1e9))],
        chart_id="chart-cost",
    )
    lat = await data.latencies(state.store, window)
    groups = await data.grouped(state.store, window, vis, "model", "deployment")
    lat_rows = []
    for row in groups:
        model, deployment = row["model"], row["deployment"]
        lt = lat.get((model, deployment), data.Latency(None, None, None, None))
        lat_rows.append(
            [
                esc(model or "–"),
                esc(deployment or "(none)"),
                cell(f"requests:{model}:{deployment}", num(row["requests"])),
                cell(f"errors:{model}:{deployment}", num(row["errors"])),
                esc(ms(lt.p50_ms)),
                esc(ms(lt.p95_ms)),
                esc(ms(lt.ttft_p50_ms)),
                esc(ms(lt.ttft_p95_ms)),
            ]
        )
    body = (
        f'<div class="cards">{cards}</div>'
        f"<h2>Requests and errors per second</h2>{req_chart}"
        f"<h2>Tokens per {'minute' if window.res == 60 else 'hour'}</h2>{token_chart}"
        f"<h2>Cost per {'minute' if window.res == 60 else 'hour'}</h2>{cost_chart}"
        "<h2>Latency by model and deployment</h2>"
        '<p class="muted">Percentiles from log-scale histograms (±9 %); TTFT for streams only.</p>'
        + table(
            ["model", "deployment", "requests", "errors", "p50", "p95", "TTFT p50", "TTFT p95"],
            lat_rows,
            numeric=(2, 3, 4, 5, 6, 7),
            table_id="latency",
        )
    )
    return "Overview", body


async def models(state: AppState, principal: Principal, window: data.Window) -> Page:
    vis = visibility_for(principal)
    stats = {r["deployment"]: r for r in await data.grouped(state.store, window, vis, "deployment")}
    lat: dict[str, data.Latency] = {}
    for (_model, deployment), value in (await data.latencies(state.store, window)).items():
        lat.setdefault(deployment, value)
    parts = []
    for group in state.router.snapshot():
        rows = []
        deployments: Any = group.get("deployments") or []
        for dep in deployments:
            label = str(dep.get("deployment"))
            st = stats.get(label, {})
            lt = lat.get(label, data.Latency(None, None, None, None))
            breaker = str(dep.get("breaker"))
            rows.append(
                [
                    esc(label),
                    esc("local" if dep.get("local") else "cloud"),
                    f'<span class="{"ok" if breaker == "closed" else "err"}">{esc(breaker)}</span>',
                    esc(f"{dep.get('in_flight')}/{dep.get('max_concurrency') or '∞'}"),
                    esc(dep.get("queued")),
                    esc(ms(dep.get("ewma_latency_ms"))),
                    cell(f"deployment-requests:{label}", num(st.get("requests", 0))),
                    esc(num(st.get("errors", 0))),
                    esc(num(st.get("tokens_in", 0) + st.get("tokens_out", 0))),
                    cell(f"deployment-cost:{label}", usd(int(st.get("cost_nano", 0)))),
                    esc(ms(lt.p50_ms)),
                    esc(ms(lt.p95_ms)),
                ]
            )
        fallbacks: Any = group.get("fallbacks") or []
        parts.append(
            f"<h2>{esc(group.get('model'))}</h2>"
            f'<p class="muted">strategy {esc(group.get("strategy"))}'
            f"{'; falls back to ' + esc(', '.join(map(str, fallbacks))) if fallbacks else ''}</p>"
            + table(
                [
                    "deployment",
                    "where",
                    "breaker",
                    "in flight",
                    "queued",
                    "EWMA",
                    "requests",
                    "errors",
                    "tokens",
                    "cost",
                    "p50",
                    "p95",
                ],
                rows,
                numeric=(3, 4, 5, 6, 7, 8, 9, 10, 11),
            )
        )
    return "Models & deployments", "".join(parts) or '<p class="muted">no models configured</p>'


async def routing(state: AppState, principal: Principal, window: data.Window) -> Page:
    vis = visibility_for(principal)
    total = await data.totals(state.store, window, vis)
    by_local = {bool(r["local"]): r for r in await data.grouped(state.store, window, vis, "local")}
    share_rows = []
    for is_local, name in ((True, "local"), (False, "cloud")):
        r = by_local.get(is_local, {})
        requests, tokens = int(r.get("requests", 0)), int(r.get("tokens_in", 0)) + int(r.get("tokens_out", 0))
        cost = int(r.get("cost_nano", 0))
        share_rows.append(
            [
                esc(name),
                cell(f"{name}-requests", num(requests)),
                esc(pct(requests, total.requests)),
                cell(f"{name}-tokens", num(tokens)),
                esc(pct(tokens, total.tokens)),
                cell(f"{name}-cost", usd(cost)),
                esc(pct(cost, total.cost_nano)),
            ]
        )
    routes = await data.grouped(state.store, window, vis, "route")
    routes.sort(key=lambda r: -r["requests"])
    route_rows = [
        [
            esc(r["route"] or "(not routed)"),
            cell(f"route:{r['route']}", num(r["requests"])),
            esc(pct(r["requests"], total.requests)),
        ]
        for r in routes
    ]
    buckets, split = await data.series(state.store, window, vis, by="local")
    chart = line_chart(
        buckets,
        [
            ("local", data.values(buckets, split.get("True", {}), "requests")),
            ("cloud", data.values(buckets, split.get("False", {}), "requests")),
        ],
        chart_id="chart-local-cloud",
    )
    body = (
        "<h2>Local vs cloud</h2>"
        + table(
            ["where", "requests", "share", "tokens", "share", "cost", "share"],
            share_rows,
            numeric=(1, 2, 3, 4, 5, 6),
            table_id="local-cloud",
        )
        + f"<h2>Requests over time</h2>{chart}"
        + "<h2>Route reasons</h2>"
        + bar_chart(
            [(r["route"] or "(not routed)", float(r["requests"])) for r in routes[:12]], chart_id="routes"
        )
        + table(["route", "requests", "share"], route_rows, numeric=(1, 2), table_id="routes-table")
    )
    return "Routing", body


def _budget_visible(vis: Visibility, keys: dict[str, KeyRecord], budget: BudgetState) -> bool:
    if vis == Visibility():
        return True
    scope, scope_id = budget.spec.scope, budget.spec.scope_id
    if scope is Scope.KEY:
        record = keys.get(scope_id)
        return (
            record is not None
            and all(
                want is None or getattr(record, name) == want
                for name, want in (("team_id", vis.team_id), ("user_id", vis.user_id), ("org_id", vis.org_id))
            )
            and (vis.key_id is None or vis.key_id == scope_id)
        )
    wanted = {Scope.TEAM: vis.team_id, Scope.USER: vis.user_id, Scope.ORG: vis.org_id}
    return wanted.get(scope) is not None and wanted.get(scope) == scope_id


async def spend(state: AppState, principal: Principal, window: data.Window) -> Page:
    vis = visibility_for(principal)
    keys = await _keys(state)
    total = await data.totals(state.store, window, vis)

    def rows_of(group: list[dict[str, Any]], label: Any, metric: str) -> list[list[str]]:
        ordered = sorted(group, key=lambda r: (-r["cost_nano"], str(r.get(metric, ""))))
        return [
            [
                label(r),
                esc(num(r["requests"])),
                esc(num(r["tokens_in"] + r["tokens_out"])),
                cell(f"{metric}-cost:{r.get(metric) or ''}", usd(r["cost_nano"])),
            ]
            for r in ordered
        ]

    by_key = await data.grouped(state.store, window, vis, "key_id")
    by_team = await data.grouped(state.store, window, vis, "team_id")
    by_model = await data.grouped(state.store, window, vis, "model")
    by_tag = data.by_tag(await data.grouped(state.store, window, vis, "tags"))
    heads = ["requests", "tokens", "cost"]
    budget_rows = []
    for budget in await state.store.budgets():
        if not _budget_visible(vis, keys, budget):
            continue
        spec = budget.spec
        name = _key_label(keys, spec.scope_id) if spec.scope is Scope.KEY else spec.scope_id
        used = budget.spend_nano + budget.reserved_nano
        budget_rows.append(
            [
                esc(spec.scope.value),
                esc(name),
                esc(spec.period.value),
                esc(usd(spec.limit_nano)),
                cell(
                    f"budget-spend:{spec.scope.value}:{spec.scope_id}:{spec.period.value}",
                    usd(budget.spend_nano),
                ),
                esc(usd(budget.reserved_nano)),
                esc(pct(used, spec.limit_nano)),
            ]
        )
    body = (
        f'<div class="cards">{card("cost in range", usd(total.cost_nano), "spend-total")}</div>'
        "<h2>By key</h2>"
        + table(
            ["key", *heads],
            rows_of(by_key, lambda r: esc(_key_label(keys, r["key_id"])), "key_id"),
            numeric=(1, 2, 3),
            table_id="spend-key",
        )
        + "<h2>By team</h2>"
        + table(
            ["team", *heads],
            rows_of(by_team, lambda r: esc(r["team_id"] or "(no team)"), "team_id"),
            numeric=(1, 2, 3),
            table_id="spend-team",
        )
        + "<h2>By tag</h2>"
        + table(
            ["tag", "requests", "tokens", "cost"],
            [
                [
                    esc(r["tag"]),
                    esc(num(r["requests"])),
                    esc(num(r["tokens"])),
                    cell(f"tag-cost:{r['tag']}", usd(r["cost_nano"])),
                ]
                for r in by_tag
            ],
            numeric=(1, 2, 3),
            table_id="spend-tag",
        )
        + "<h2>By model</h2>"
        + table(
            ["model", *heads],
            rows_of(by_model, lambda r: esc(r["model"] or "–"), "model"),
            numeric=(1, 2, 3),
            table_id="spend-model",
        )
        + "<h2>Budgets (current period)</h2>"
        + table(
            ["scope", "id", "period", "limit", "spend", "reserved", "used"],
            budget_rows,
            numeric=(3, 4, 5, 6),
            table_id="budgets",
            empty="no budgets set",
        )
    )
    return "Spend", body


async def cache(state: AppState, principal: Principal, window: data.Window) -> Page:
    vis = visibility_for(principal)
    rows = {r["cache"]: r for r in await data.grouped(state.store, window, vis, "cache")}
    hits = int(rows.get("hit", {}).get("requests", 0))
    misses = int(rows.get("miss", {}).get("requests", 0))
    table_rows = [
        [esc(name or "(no cache)"), cell(f"cache:{name or 'none'}", num(r["requests"]))]
        for name, r in sorted(rows.items())
    ]
    rate = pct(hits, hits + misses) if hits + misses else "0%"
    body = (
        f'<div class="cards">{card("hit rate", rate, "cache-hit-rate")}'
        f"{card('hits', num(hits), 'cache-hits')}{card('misses', num(misses), 'cache-misses')}</div>"
        '<p class="muted">Hit rate = hits / (hits + misses). Requests no response cache looked at '
        "count as “no cache”.</p>" + table(["cache", "requests"], table_rows, numeric=(1,), table_id="cache")
    )
    return "Cache", body


async def requests(state: AppState, principal: Principal, window: data.Window, query: dict[str, str]) -> Page:
    params = {**query, "since": str(window.since)}
    params.pop("until", None)
    search = parse_search(params, principal)
    rows = await state.store.search_requests(search)
    fields = []
    for name, label in (
        ("q", "text in prompts/answers"),
        ("key", "key id"),
        ("team", "team"),
        ("model", "model"),
        ("deployment", "deployment"),
        ("status", "status (200, 5xx, errors…)"),
    ):
        fields.append(
            f'<label>{esc(label)} <input name="{esc(name)}" value="{esc(query.get(name, ""))}" size="14">'
            "</label>"
        )
    options = "".join(
        f'<option value="{esc(r)}"{" selected" if r == window.name else ""}>{esc(r)}</option>' for r in RANGES
    )
    form = (
        f'<form class="search" method="get" action="/ui/requests">{"".join(fields)}'
        f'<select name="range">{options}</select><button type="submit">Search</button></form>'
    )
    table_rows = [
        [
            esc(when(r.created_at)),
            link(f"/ui/requests/{r.request_id}", r.request_id),
            esc(r.key_hint),
            esc(r.model or "–"),
            esc(r.deployment or "–"),
            f'<span class="{"err" if r.status >= 400 or r.is_error else ""}">'
            f"{esc(r.status)} {esc(r.outcome)}</span>",
            esc(num(r.tokens_in)),
            esc(num(r.tokens_out)),
            esc(usd(r.cost_nano)),
            esc(ms(r.duration_ms)),
            esc("yes" if r.captured else ""),
        ]
        for r in rows
    ]
    body = (
        form
        + f'<p class="muted"><span data-metric="search-results">{len(rows)}</span> requests'
        + (" (the newest shown)" if len(rows) == search.limit else "")
        + "</p>"
        + table(
            [
                "time",
                "request",
                "key",
                "model",
                "deployment",
                "status",
                "in",
                "out",
                "cost",
                "duration",
                "captured",
            ],
            table_rows,
            numeric=(6, 7, 8, 9),
            table_id="requests",
            empty="no requests match",
        )
    )
    return "Request log", body


async def request_detail(state: AppState, principal: Principal, request_id: str) -> Page | None:
    row = await state.store.request_by_id(request_id, visibility_for(principal))
    if row is None:
        return None
    facts = [
        ("request id", row.request_id),
        ("time", when(row.created_at)),
        ("method / path", f"{row.method} {row.path}"),
        ("key", f"{row.key_hint} ({row.key_id or 'master'})"),
        ("team / user", f"{row.team_id or '–'} / {row.user_id or '–'}"),
        ("tags", ", ".join(row.tags) or "–"),
        ("model → deployment", f"{row.model or '–'} → {row.deployment or '–'} ({row.response_model or '–'})"),
        ("route", f"{row.route or '–'} ({'local' if row.local else 'cloud'})"),
        ("status / outcome", f"{row.status} {row.outcome}"),
        ("error", f"{row.error_type or ''} {row.error_message or ''}".strip() or "–"),
        ("tokens in / out", f"{row.tokens_in} / {row.tokens_out} (cache read {row.tokens_cache_read})"),
        ("cost", usd(row.cost_nano)),
        ("duration / TTFT / overhead", f"{ms(row.duration_ms)} / {ms(row.ttft_ms)} / {ms(row.overhead_ms)}"),
        ("stream", "yes" if row.stream else "no"),
    ]
    fact_rows = [[esc(k), cell(f"detail:{k}", v)] for k, v in facts]
    attempt_rows = [
        [
            esc(i + 1),
            esc(a.get("deployment")),
            esc("local" if a.get("local") else "cloud"),
            esc(a.get("outcome")),
            esc(a.get("status")),
            esc(ms(a.get("latency_ms"))),
        ]
        for i, a in enumerate(row.attempts)
    ]
    ledger_rows = [
        [
            esc(a.attempt),
            esc(a.deployment),
            esc(a.route_reason),
            esc(a.status),
            esc(a.http_status),
            esc(f"{a.tokens_in}/{a.tokens_out}"),
            cell(f"ledger-cost:{a.attempt}", usd(a.cost_nano)),
            esc(ms(a.latency_ms)),
        ]
        for a in await state.store.ledger_rows(request_id=request_id, limit=100)
    ]
    bodies = ""
    if row.prompt is not None or row.response is not None:
        bodies = (
            f'<h2>Prompt</h2><pre id="prompt">{esc(row.prompt or "")}</pre>'
            f'<h2>Answer</h2><pre id="response">{esc(row.response or "")}</pre>'
        )
    else:
        bodies = '<p class="muted">Prompt and answer not captured (see request_log.capture_prompts).</p>'
    body = (
        table(["field", "value"], fact_rows, table_id="request")
        + "<h2>Attempts</h2>"
        + table(
            ["#", "deployment", "where", "outcome", "status", "latency"], attempt_rows, table_id="attempts"
        )
        + "<h2>Ledger rows</h2>"
        + table(
            ["attempt", "deployment", "route", "status", "http", "tokens", "cost", "latency"],
            ledger_rows,
            table_id="ledger",
            empty="no ledger rows (rejected before any upstream call)",
        )
        + bodies
    )
    return f"Request {request_id}", body

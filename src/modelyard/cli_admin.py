"""``modelyard keys …`` and ``modelyard spend``: the admin API from the terminal."""

from __future__ import annotations

import csv
import io
import sys
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="Create, list, rotate and revoke virtual API keys.", no_args_is_help=True)

URL = Annotated[str, typer.Option("--url", envvar="MODELYARD_URL", help="Base URL of the gateway.")]
ADMIN_KEY = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="MODELYARD_API_KEY",
        help="An admin key (the master key or an admin virtual key).",
        show_default=False,
    ),
]


def _call(method: str, url: str, path: str, key: str | None, **kwargs: Any) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.request(method, url.rstrip("/") + path, headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach {url}: {exc}; is `modelyard serve` running?", fg="red", err=True)
        raise typer.Exit(1) from None
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        typer.secho(f"error {resp.status_code}: {message}", fg="red", err=True)
        raise typer.Exit(1)
    return resp.json()


@keys_app.command("create")
def create(
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    role: Annotated[str, typer.Option(help="key-holder, viewer or admin.")] = "key-holder",
    team: Annotated[str | None, typer.Option(help="Team id the key belongs to.")] = None,
    user: Annotated[str | None, typer.Option(help="User id the key belongs to.")] = None,
    org: Annotated[str | None, typer.Option(help="Organisation id.")] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="A model it may use (repeat); default all.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag for reports (repeat).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on each request's max_tokens.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    budget_daily: Annotated[str | None, typer.Option(help="Daily budget in USD, e.g. 5.")] = None,
    budget_monthly: Annotated[str | None, typer.Option(help="Monthly budget in USD.")] = None,
    budget_total: Annotated[str | None, typer.Option(help="Lifetime budget in USD.")] = None,
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after this many days.")] = None,
) -> None:
    """Create a key. It is printed once: store it now."""
    budgets = [
        {"period": p, "limit_usd": v}
        for p, v in (("daily", budget_daily), ("monthly", budget_monthly), ("total", budget_total))
        if v is not None
    ]
    body: dict[str, Any] = {
        "name": name,
        "role": role,
        "team_id": team,
        "user_id": user,
        "org_id": org,
        "models": model or None,
        "tags": tag or None,
        "max_tokens": max_tokens,
        "rpm": rpm,
        "tpm": tpm,
        "budgets": budgets or None,
    }
    if expires_in_days is not None:
        body["expires_in_s"] = int(expires_in_days * 86400)
    created = _call("POST", url, "/admin/keys", key, json={k: v for k, v in body.items() if v is not None})
    typer.secho(created["key"], fg="green", bold=True)
    typer.echo(
        f"id {created['id']}  role {created['role']}  team {created['team_id'] or '-'}  "
        f"(shown once: store it now)",
        err=True,
    )


@keys_app.command("list")
def list_keys(
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
    team: Annotated[str | None, typer.Option(help="Only this team's keys.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
) -> None:
    """List keys (never their secrets: only a hint)."""
    params = {"team": team} if team else {}
    if revoked:
        params["include_revoked"] = "1"
    data = _call("GET", url, "/admin/keys", key, params=params)["data"]
    table = Table("id", "hint", "name", "role", "team", "user", "models", "rpm", "tpm", "revoked")
    for k in data:
        table.add_row(
            k["id"],
            k["hint"],
            k["name"] or "",
            k["role"],
            k["team_id"] or "",
            k["user_id"] or "",
            ",".join(k["models"]) if k["models"] else "all",
            str(k["rpm"] or ""),
            str(k["tpm"] or ""),
            "yes" if k["revoked_at"] else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")],
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
) -> None:
    """Revoke a key at once (every gateway process stops accepting it within 2 s)."""
    _call("POST", url, f"/admin/keys/{key_id}/revoke", key)
    typer.secho(f"revoked {key_id}", fg="yellow")


@keys_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")],
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
    overlap_hours: Annotated[float, typer.Option(help="How long the old key keeps working.")] = 24.0,
) -> None:
    """Issue a new key with the same grants; the old one keeps working for the overlap."""
    new = _call("POST", url, f"/admin/keys/{key_id}/rotate", key, json={"overlap_s": overlap_hours * 3600})
    typer.secho(new["key"], fg="green", bold=True)
    typer.echo(f"new id {new['id']}; {key_id} stops working in {overlap_hours:g} h (shown once)", err=True)


def spend(
    by: Annotated[
        str, typer.Option(help="Group by key, team, user, org, model, deployment, tag or status.")
    ] = "model",
    since: Annotated[str, typer.Option(help="Start: a duration ago (15m, 24h, 7d) or unix seconds.")] = "7d",
    until: Annotated[str | None, typer.Option(help="End (default now).", show_default=False)] = None,
    team: Annotated[str | None, typer.Option(help="Only this team.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    key_id: Annotated[str | None, typer.Option("--key-id", help="Only this key.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout instead of a table.")] = False,
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
) -> None:
    """What was spent, grouped, with the share served locally."""
    params = {"by": by, "since": since}
    for name, value in (("until", until), ("team", team), ("model", model), ("key", key_id)):
        if value:
            params[name] = value
    rows = _call("GET", url, "/admin/spend", key, params=params)["data"]
    columns = (
        "group",
        "requests",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "local_requests",
        "local_tokens",
        "local_cost_usd",
    )
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])
        sys.stdout.write(out.getvalue())
        return
    table = Table(by, "requests", "tokens in", "tokens out", "cost $", "local req", "local share of cost")
    total_cost = total_local = 0.0
    for row in rows:
        cost = float(row.get("cost_usd") or 0)
        local = float(row.get("local_cost_usd") or 0)
        total_cost, total_local = total_cost + cost, total_local + local
        share = f"{100 * local / cost:.0f}%" if cost else "-"
        table.add_row(
            str(row["group"]),
            str(row["requests"]),
            str(row["tokens_in"]),
            str(row["tokens_out"]),
            f"{cost:.6f}",
            str(row.get("local_requests", 0)),
            share,
        )
    console = Console()
    console.print(table)
    console.print(f"total ${total_cost:.6f}, of which local ${total_local:.6f}")

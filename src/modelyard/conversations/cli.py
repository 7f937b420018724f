"""``modelyard conversations …``: list, show, delete and purge server-side conversations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelyard.cli_admin import ADMIN_KEY, URL, _call

conversations_app = typer.Typer(
    help="Server-side conversations (conversation_id): list, show, delete, purge.", no_args_is_help=True
)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@conversations_app.command("list")
def list_conversations(
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
    limit: Annotated[int, typer.Option(help="How many, newest first (1-1000).")] = 50,
) -> None:
    """Conversations this key may see, last continued first."""
    data: list[dict[str, Any]] = _call("GET", url, "/admin/conversations", key, params={"limit": limit})[
        "data"
    ]
    table = Table("turns", "updated (UTC)", "created (UTC)", "key", "team")
    table.add_column("id", overflow="fold")  # never cut: it is what `show` and `delete` take
    for c in data:
        table.add_row(
            str(c["turns"]),
            _when(c["updated_at"]),
            _when(c["created_at"]),
            c["key_id"] or "-",
            c["team_id"] or "-",
            c["id"],
        )
    Console().print(table)


@conversations_app.command("show")
def show(
    conversation_id: Annotated[str, typer.Argument(help="The conversation's id.")],
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
) -> None:
    """A conversation's stored messages, turn by turn."""
    c = _call("GET", url, f"/admin/conversations/{conversation_id}", key)
    console = Console()
    console.print(f"[bold]{c['id']}[/bold]: {c['turns']} turns, last {_when(c['updated_at'])} UTC")
    if c.get("system"):
        console.print(f"[dim]system:[/dim] {c['system']}")
    for m in c["messages"]:
        content = m.get("content")
        if not isinstance(content, str):
            content = "" if content is None else str(content)
        for call in m.get("tool_calls") or ():
            content += f" → {call['function']['name']}({call['function']['arguments']})"
        console.print(f"[cyan]{m['turn']:>3} {m['role']:>9}[/cyan]  {content}", markup=True, highlight=False)


@conversations_app.command("delete")
def delete(
    conversation_id: Annotated[str, typer.Argument(help="The conversation's id.")],
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
) -> None:
    """Delete a conversation and its messages (the id then starts afresh)."""
    _call("DELETE", url, f"/admin/conversations/{conversation_id}", key)
    typer.echo(f"deleted {conversation_id}")


@conversations_app.command("purge")
def purge(
    url: URL = "http://127.0.0.1:4000",
    key: ADMIN_KEY = None,
    older_than_days: Annotated[
        float | None, typer.Option(help="Instead of the configured conversations.retention_days.")
    ] = None,
) -> None:
    """Run the retention purge now (master key or an unconfined admin key)."""
    body = {} if older_than_days is None else {"older_than_days": older_than_days}
    purged = _call("POST", url, "/admin/conversations/purge", key, json=body)["purged"]
    typer.echo(f"purged {purged} conversations and stored responses")


__all__ = ["conversations_app"]

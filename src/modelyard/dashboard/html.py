"""HTML building blocks for the dashboard: escaping, formatting, the page layout.

Every piece of text that did not come from this module's own constants goes through :func:`esc`
(``html.escape`` with quotes), including model names, key names, team ids, error messages and
captured prompts: a ``<script>`` in a prompt renders as text. There is no template engine.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

NANO_PER_USD = 1_000_000_000
RANGES = {"15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_RANGE = "1h"
PAGES = (
    ("/ui", "Overview"),
    ("/ui/models", "Models & deployments"),
    ("/ui/routing", "Routing"),
    ("/ui/spend", "Spend"),
    ("/ui/requests", "Request log"),
    ("/ui/cache", "Cache"),
)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;
flex-wrap:wrap}
header a{color:#cfd8ff;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .brand{font-weight:700;color:#fff}header form{margin:0}
main{padding:16px;max-width:1280px}
h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:20px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:10px 14px;min-width:140px}
.card .v{font-size:22px;font-weight:600}.card .l{color:#5b6475;font-size:12px}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e8;margin:4px 0 12px}
th,td{padding:4px 10px;border-bottom:1px solid #eceff3;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ranges a{margin-right:8px}.muted{color:#6b7385}.err{color:#b42318}.ok{color:#067647}
pre{background:#fff;border:1px solid #dde1e8;padding:8px;white-space:pre-wrap;word-break:break-word;
max-height:480px;overflow:auto}
svg{background:#fff;border:1px solid #dde1e8;border-radius:6px}
form.search input,form.search select{margin:0 6px 6px 0}
.bar{fill:#3b63d1}.bar2{fill:#e0892b}
"""


def esc(value: Any) -> str:
    """Text made safe for HTML element content and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def usd(nano: int) -> str:
    """Exact dollars from nano-dollars: ``$0.0001234`` (no float rounding)."""
    if not nano:
        return "$0"
    text = f"{Decimal(nano) / NANO_PER_USD:.9f}".rstrip("0").rstrip(".")
    return "$" + text


def num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:,.1f} ms"


def pct(part: float, whole: float) -> str:
    return "–" if not whole else f"{100.0 * part / whole:.1f}%"


def when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


def link(path: str, text: str, **query: Any) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    href = path + ("?" + urlencode(params) if params else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    table_id: str | None = None,
    empty: str = "nothing in this time range",
) -> str:
    """A table; cells are *already-escaped HTML* (build them with :func:`esc` and friends)."""
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"n" if i in numeric else ""}">{c}</td>' for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">{esc(empty)}</td></tr>')
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cell(metric: str, text: str) -> str:
    """A value tagged with ``data-metric`` (what tests and scrapers read)."""
    return f'<span data-metric="{esc(metric)}">{esc(text)}</span>'


def card(label: str, value: str, metric: str) -> str:
    return (
        f'<div class="card"><div class="v">{cell(metric, value)}</div><div class="l">{esc(label)}</div></div>'
    )


def page(
    *,
    title: str,
    path: str,
    body: str,
    nonce: str,
    range_name: str | None = None,
    who: str = "",
    refresh: bool = True,
    extra_query: dict[str, str] | None = None,
) -> bytes:
    """A whole page: header navigation, range picker, body, and the auto-refresh script."""
    nav = "".join(
        f'<a href="{esc(href)}{"?range=" + esc(range_name) if range_name else ""}"'
        f"{' class=on' if href == path else ''}>{esc(label)}</a>"
        for href, label in PAGES
    )
    ranges = ""
    if range_name is not None:
        parts = []
        for name in RANGES:
            query = {**(extra_query or {}), "range": name}
            a = link(path, name, **query)
            parts.append(f"<b>{a}</b>" if name == range_name else a)
        ranges = f'<div class="ranges">Range: {" ".join(parts)}</div>'
    logout = (
        '<form method="post" action="/ui/logout"><button type="submit">Log out</button></form>' if who else ""
    )
    script = ""
    if refresh:
        # The one script: reload every 30 s while the box is ticked (remembered in localStorage).
        script = (
            f'<label class="muted"><input type="checkbox" id="autorefresh"> auto-refresh</label>'
            f"<script nonce=\"{esc(nonce)}\">(function(){{var b=document.getElementById('autorefresh');"
            "b.checked=localStorage.getItem('myd-refresh')!=='0';"
            "b.onchange=function(){localStorage.setItem('myd-refresh',b.checked?'1':'0')};"
            "setTimeout(function(){if(b.checked)location.reload()},30000)})();</script>"
        )
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} · modelyard</title><style>{CSS}</style></head><body>"
        f'<header><span class="brand">modelyard</span>{nav}<span class="muted">{esc(who)}</span>'
        f"{script}{logout}</header>"
        f"<main><h1>{esc(title)}</h1>{ranges}{body}</main></body></html>"
    )
    return doc.encode()

"""``modelyard top``: a live terminal view of a running gateway.

Two admin routes feed it (an admin or a viewer key may read both):

* ``GET /admin/deployments``: each deployment's live state (in flight / limit, queue, EWMA
  latency, breaker, served, failed) and the hourly cost of local hardware;
* ``GET /admin/ledger``: one row per upstream attempt. The first refresh asks for the whole
  window (``since=15m``); later ones ask only for rows since the newest seen, less an overlap
  for rows committed late, and drop those that fell out of the window.

Per model, from the ledger (a *request* is one ``request_id``; its attempts are its rows):

=============  ===============================================================================
requests       requests that reached an upstream; those refused before (by auth, a model
               allow-list, a budget, a rate limit or bad input: ledger status ``refused``) are
               counted apart, in the header's ``refused`` figure
error %        requests whose last attempt did not end ``ok`` (client disconnects excluded)
p50 / p95 ms   nearest-rank percentiles of a request's upstream time: its attempts' latencies
               summed (backoff waits and the gateway's own overhead are not in it)
TTFT p50/p95   nearest-rank percentiles of time to first token (streamed answers only)
tokens, cost   sums over the rows (only the attempt that answered carries tokens and cost)
local %        share of requests whose last attempt ran on a local deployment
=============  ===============================================================================
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

URL = Annotated[str, typer.Option("--url", envvar="MODELYARD_URL", help="Base URL of the gateway.")]
READER_KEY = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="MODELYARD_API_KEY",
        help="An admin or viewer key (the master key, or a key created with --role viewer).",
        show_default=False,
    ),
]

NANO_PER_USD = Decimal(10**9)
LEDGER_PAGE = 10_000
"""Rows per ledger call (the route's maximum)."""
MAX_PAGES = 20
"""Ledger calls per refresh at most; beyond, the view says it is incomplete."""
OVERLAP_S = 30.0
"""How far back each incremental refresh looks again, for rows committed after newer ones."""
OK_STATUSES = frozenset({"ok", "client_disconnect"})
REFUSED = "refused"
"""Ledger status of a request answered without an upstream attempt (modelyard.policy.refused)."""
BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}
_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
KEY_NEEDED = (
    "`modelyard top` needs an admin or viewer key: the master key (MODELYARD_MASTER_KEY on the "
    "gateway) or a key made with `modelyard keys create --role viewer`; pass it with --key or "
    "MODELYARD_API_KEY"
)


class TopError(Exception):
    """A refresh failed. ``retry``: worth trying again (the gateway may come back)."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


# -- fetching -----------------------------------------------------------------------------------
class AdminClient:
    """GETs on the admin API, with errors turned into messages a person can act on."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.clock_offset_s = 0.0
        """Gateway clock minus ours, from the ``date`` header (to age rows by the gateway's clock)."""

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            resp = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise TopError(
                f"cannot reach {self.url}: {exc or type(exc).__name__}; is `modelyard serve` running?",
                retry=True,
            ) from None
        date = resp.headers.get("date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                self.clock_offset_s = email.utils.parsedate_to_datetime(date).timestamp() - time.time()
        if resp.status_code == 401:
            given = "no key was given" if not self.key else "the gateway refused this key"
            raise TopError(f"401 from {path}: {given}. {KEY_NEEDED}", retry=False)
        if resp.status_code == 403:
            raise TopError(f"403 from {path}: {_message(resp)}. {KEY_NEEDED}", retry=False)
        if resp.status_code >= 400:
            raise TopError(
                f"error {resp.status_code} from {path}: {_message(resp)}", retry=resp.status_code >= 500
            )
        return resp.json()

    def ledger(self, since: str, limit: int) -> list[dict[str, Any]]:
        rows = self.get("/admin/ledger", {"since": since, "limit": str(limit)})["data"]
        return list(rows)


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def parse_window(text: str) -> float:
    """``15m``, ``2h``, ``1d`` → seconds."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter("give a duration like 15m, 2h or 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


# -- the ledger window --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """The fields of one ledger row that ``top`` uses."""

    request_id: str
    attempt: int
    model: str
    deployment: str
    status: str
    local: bool
    latency_ms: float
    ttft_ms: float | None
    tokens_in: int
    tokens_out: int
    cost_nano: int
    created_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Attempt:
        return cls(
            request_id=str(row["request_id"]),
            attempt=int(row["attempt"]),
            model=str(row["model_requested"]),
            deployment=str(row["deployment"]),
            status=str(row["status"]),
            local=bool(row["local"]),
            latency_ms=float(row["latency_ms"] or 0.0),
            ttft_ms=None if row.get("ttft_ms") is None else float(row["ttft_ms"]),
            tokens_in=int(row["tokens_in"] or 0),
            tokens_out=int(row["tokens_out"] or 0),
            cost_nano=int(row["cost_nano"] or 0),
            created_at=float(row["created_at"]),
        )


class LedgerWindow:
    """The attempts of the last ``window_s`` seconds, kept between refreshes."""

    def __init__(self, window_s: float, *, page: int = LEDGER_PAGE, max_pages: int = MAX_PAGES) -> None:
        self.window_s = window_s
        self.page = page
        self.max_pages = max_pages
        self.rows: dict[tuple[str, int], Attempt] = {}
        self.complete = True
        """False when a refresh stopped after ``max_pages`` calls (the newest rows are missing)."""
        self._newest: float | None = None

    def refresh(self, fetch: Callable[[str, int], list[dict[str, Any]]], now: float) -> None:
        """Ask ``fetch(since, limit)`` for new rows; ``now`` is the gateway's clock."""
        if self._newest is None:
            since = f"{max(1, math.ceil(self.window_s / 60))}m"
        else:
            since = repr(max(self._newest - OVERLAP_S, now - self.window_s))
        self.complete = False
        for _ in range(self.max_pages):
            batch = fetch(since, self.page)
            for raw in batch:
                row = Attempt.from_row(raw)
                self.rows[(row.request_id, row.attempt)] = row
                if self._newest is None or row.created_at > self._newest:
                    self._newest = row.created_at
            if len(batch) < self.page:
                self.complete = True
                break
            last = float(batch[-1]["created_at"])
            if repr(last) == since:  # a whole page at one instant: cannot page further
                break
            since = repr(last)
        if self._newest is None:
            self._newest = now - self.window_s
        cutoff = now - self.window_s
        self.rows = {k: r for k, r in self.rows.items() if r.created_at >= cutoff}


# -- statistics ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100): the smallest value with at least q % at or below."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class ModelStats:
    """What the model table shows for one model (or, as ``total``, for all)."""

    model: str
    requests: int = 0
    errors: int = 0
    local: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_nano: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)
    refused: int = 0
    """Requests answered without an upstream attempt (ledger status ``refused``)."""

    def add(self, attempts: Sequence[Attempt]) -> None:
        """Count one request, given its attempts in order."""
        last = attempts[-1]
        self.requests += 1
        self.errors += last.status not in OK_STATUSES
        self.local += last.local
        self.latencies_ms.append(sum(a.latency_ms for a in attempts))
        for a in attempts:
            self.tokens_in += a.tokens_in
            self.tokens_out += a.tokens_out
            self.cost_nano += a.cost_nano
            if a.ttft_ms is not None:
                self.ttfts_ms.append(a.ttft_ms)

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_nano) / NANO_PER_USD


def summarize(rows: Iterable[Attempt]) -> tuple[list[ModelStats], ModelStats]:
    """Per-model statistics (busiest first) and the totals."""
    requests: dict[str, list[Attempt]] = {}
    for row in rows:
        requests.setdefault(row.request_id, []).append(row)
    per_model: dict[str, ModelStats] = {}
    total = ModelStats("total")
    for attempts in requests.values():
        attempts.sort(key=lambda a: a.attempt)
        if all(a.status == REFUSED for a in attempts):
            total.refused += 1  # never reached a model: not a model's request, nor its error
            continue
        model = attempts[0].model
        per_model.setdefault(model, ModelStats(model)).add(attempts)
        total.add(attempts)
    ordered = sorted(per_model.values(), key=lambda s: (-s.requests, s.model))
    return ordered, total


# -- rendering ----------------------------------------------------------------------------------
def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_pct(part: int, whole: int, digits: int = 1) -> str:
    return "-" if not whole else f"{100 * part / whole:.{digits}f}%"


def fmt_usd(value: Decimal) -> str:
    return f"{value:.6f}"


def deployments_table(snapshot: dict[str, Any]) -> Table:
    """Live state of every deployment, from ``GET /admin/deployments``."""
    costs: dict[str, Any] = snapshot.get("local_costs") or {}
    table = Table(title="deployments (now)", title_justify="left", expand=False)
    for name in ("model", "deployment", "where"):
        table.add_column(name)
    for name in ("in flight", "queue", "EWMA ms"):
        table.add_column(name, justify="right")
    table.add_column("breaker")
    for name in ("served", "failed", "$/h"):
        table.add_column(name, justify="right")
    for group in snapshot.get("models", []):
        for dep in group.get("deployments", []):
            limit = dep.get("max_concurrency")
            breaker = str(dep.get("breaker", "?"))
            label = breaker
            if breaker == "open" and dep.get("breaker_opens_in_s"):
                label = f"open ({float(dep['breaker_opens_in_s']):.0f}s)"
            ewma = dep.get("ewma_latency_ms")
            hourly = costs.get(str(dep.get("deployment")), {}).get("usd_per_hour")
            table.add_row(
                str(group.get("model")),
                str(dep.get("deployment")),
                "local" if dep.get("local") else "cloud",
                f"{dep.get('in_flight', 0)}/{limit if limit is not None else '∞'}",
                str(dep.get("queued", 0)),
                fmt_ms(None if ewma is None else float(ewma)),
                Text(label, style=BREAKER_STYLE.get(breaker, "")),
                str(dep.get("served", 0)),
                str(dep.get("failures", 0)),
                "-" if hourly is None else f"{float(hourly):.2f}",
            )
    return table


def models_table(models: Sequence[ModelStats], total: ModelStats, window: str) -> Table:
    """Per-model traffic over the window, then the totals."""
    table = Table(title=f"models (last {window})", title_justify="left", expand=False)
    table.add_column("model")
    for name in (
        "requests",
        "error %",
        "p50 ms",
        "p95 ms",
        "TTFT p50",
        "TTFT p95",
        "tokens in",
        "tokens out",
        "cost $",
        "local %",
    ):
        table.add_column(name, justify="right")
    for i, stats in enumerate([*models, total]):
        table.add_row(
            stats.model,
            str(stats.requests),
            fmt_pct(stats.errors, stats.requests),
            fmt_ms(percentile(stats.latencies_ms, 50)),
            fmt_ms(percentile(stats.latencies_ms, 95)),
            fmt_ms(percentile(stats.ttfts_ms, 50)),
            fmt_ms(percentile(stats.ttfts_ms, 95)),
            str(stats.tokens_in),
            str(stats.tokens_out),
            fmt_usd(stats.cost_usd),
            fmt_pct(stats.local, stats.requests, 0),
            style="bold" if i == len(models) else None,
            end_section=i == len(models) - 1,
        )
    return table


def render_frame(url: str, window: str, snapshot: dict[str, Any], ledger: LedgerWindow) -> Group:
    models, total = summarize(ledger.rows.values())
    header = Text.assemble(
        ("modelyard top ", "bold"),
        f"{url}  ",
        (time.strftime("%H:%M:%S"), "cyan"),
        f"  last {window}: {total.requests} requests, {fmt_pct(total.errors, total.requests)} errors, "
        f"{total.refused} refused, ${fmt_usd(total.cost_usd)}",
    )
    parts: list[RenderableType] = [header, deployments_table(snapshot), models_table(models, total, window)]
    if not ledger.complete:
        parts.append(
            Text(
                f"(ledger incomplete: more than {ledger.max_pages * ledger.page} new rows in one refresh)",
                style="yellow",
            )
        )
    return Group(*parts)


def error_frame(url: str, error: TopError, interval: float) -> Panel:
    return Panel(
        Text(f"{error}\n\nretrying every {interval:g} s (Ctrl-C to quit)", style="red"),
        title=f"modelyard top  {url}  {time.strftime('%H:%M:%S')}",
    )


class Top:
    """One session: a client, the ledger window and how to draw a frame."""

    def __init__(self, url: str, key: str | None, window: str) -> None:
        self.url = url
        self.window = window
        self.client = AdminClient(url, key)
        self.ledger = LedgerWindow(parse_window(window))

    def frame(self) -> Group:
        """Fetch and draw; raises TopError."""
        snapshot = self.client.get("/admin/deployments")
        self.ledger.refresh(self.client.ledger, time.time() + self.client.clock_offset_s)
        return render_frame(self.url, self.window, snapshot, self.ledger)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the tables into 80 columns
        console = Console(width=max(console.width, 160))
    return console


def top(
    url: URL = "http://127.0.0.1:4000",
    key: READER_KEY = None,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between refreshes.")] = 2.0,
    since: Annotated[str, typer.Option(help="Window of the model table: 15m, 1h, 1d.")] = "15m",
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """A live view of a running gateway: deployments now, and per-model traffic, errors,
    latency, TTFT, tokens, cost and local share over the last 15 minutes."""
    parse_window(since)
    session = Top(url, key, since)
    console = _console()
    try:
        if once:
            try:
                console.print(session.frame())
            except TopError as exc:
                typer.secho(str(exc), fg="red", err=True)
                raise typer.Exit(1) from None
            return
        _live(session, console, interval)
    finally:
        session.client.close()


def _live(session: Top, console: Console, interval: float) -> None:
    pause = threading.Event()
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
        try:
            while True:
                try:
                    live.update(session.frame(), refresh=True)
                except TopError as exc:
                    if not exc.retry:
                        live.stop()
                        typer.secho(str(exc), fg="red", err=True)
                        raise typer.Exit(1) from None
                    live.update(error_frame(session.url, exc, interval), refresh=True)
                pause.wait(interval)
        except KeyboardInterrupt:
            return

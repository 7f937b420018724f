"""Router labels from ``POST /v1/feedback``: each stored score joined with the prompt of its request.

A feedback row (see :mod:`modelyard.store._feedback_sql`) holds a score in [0, 1] (thumbs up = 1,
down = 0) and the model that answered (the smart route's decision; else the request log's model).
Its request's prompt comes from the request log, where it is kept only when prompt capture is on
(``request_log.capture_prompts: true``, or a key's ``store_prompts``); requests without one are
skipped and counted. The prompt text is what the router itself reads: the last user message
(:func:`modelyard.routing.smart.rules.prompt_text`).

Several scores of one model on the same prompt text are averaged; a prompt scored for only one
model leaves the other unobserved (partial labels: see :mod:`.partial`). The result is a
:class:`~.data.LabelSet` for ``router train``, or JSONL lines in the documented label format
(``router export-feedback``) to inspect and merge with eval labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson

from modelyard.routing.smart.learned.data import LabelError, LabelSet
from modelyard.routing.smart.rules import prompt_text
from modelyard.store._feedback_sql import FeedbackRow
from modelyard.store.base import Store
from modelyard.store.requestlog import RequestRow

__all__ = [
    "CAPTURE_HOWTO",
    "FeedbackError",
    "FeedbackLabels",
    "collect",
    "parse_since",
    "public_url",
    "read_feedback_labels",
]

CAPTURE_HOWTO = (
    "turn prompt capture on (config: `request_log: {capture_prompts: true}`, or a key's "
    "`store_prompts`) so later feedback can train the router"
)
MAX_FEEDBACK_ROWS = 10_000_000
_LOOKUPS_AT_ONCE = 64
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class FeedbackError(LabelError):
    """No usable feedback, or a database that cannot be read; the message says what to do."""


@dataclass
class _Prompt:
    group: str
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class FeedbackLabels:
    """Feedback scores per prompt text and model, and what was skipped and why."""

    source: str
    """Where the feedback came from (a database URL without credentials)."""
    feedback_rows: int = 0
    used: int = 0
    other_route: int = 0
    """Rows on requests another route (or none) decided, when a route was asked for."""
    no_request: int = 0
    """Rows whose request is not in the request log (request log off, or purged)."""
    no_prompt: int = 0
    """Rows whose request was logged without its prompt (capture off)."""
    unreadable_prompt: int = 0
    """Rows whose captured prompt was cut (``request_log.max_capture_bytes``) or holds no text."""
    no_model: int = 0
    """Rows whose answering model is not known."""
    prompts: dict[str, _Prompt] = field(default_factory=dict)
    """Prompt text → its groups and per-model score sums and counts (first seen first)."""

    @property
    def skipped(self) -> int:
        return self.feedback_rows - self.used

    def models(self) -> list[str]:
        """Every model with a score, the most often scored first (ties by name)."""
        counts: dict[str, int] = {}
        for entry in self.prompts.values():
            for model, n in entry.counts.items():
                counts[model] = counts.get(model, 0) + n
        return sorted(counts, key=lambda m: (-counts[m], m))

    def add(self, text: str, model: str, score: float, group: str) -> None:
        entry = self.prompts.setdefault(text, _Prompt(group))
        entry.sums[model] = entry.sums.get(model, 0.0) + score
        entry.counts[model] = entry.counts.get(model, 0) + 1
        self.used += 1

    def summary(self) -> str:
        """One line: what was read, used and skipped, and how to fix the biggest gap."""
        parts = [f"{self.feedback_rows} feedback row(s) in {self.source}: {self.used} used"]
        for count, why in (
            (self.no_prompt, "without a captured prompt"),
            (self.no_request, "whose request is not in the request log"),
            (self.unreadable_prompt, "with a cut or empty captured prompt"),
            (self.no_model, "with no known model"),
            (self.other_route, "not decided by the route asked for"),
        ):
            if count:
                parts.append(f"{count} skipped {why}")
        line = "; ".join(parts) + f"; {len(self.prompts)} distinct prompt(s)"
        if self.no_prompt or self.no_request:
            line += f". To use more: {CAPTURE_HOWTO}"
        return line

    def label_set(self) -> LabelSet:
        """The labels: one row per prompt text, each model's mean score (NaN: not scored)."""
        if not self.prompts:
            raise FeedbackError(self._empty_reason())
        models = self.models()
        if len(models) < 2:
            raise FeedbackError(
                f"{self.source}: feedback scores only {models[0]!r}; the router needs scores for two "
                "models (send some traffic to each, e.g. bandit exploration, then give feedback)"
            )
        texts = list(self.prompts)
        scores = {
            m: np.asarray(
                [
                    e.sums[m] / e.counts[m] if m in e.counts else np.nan
                    for e in (self.prompts[t] for t in texts)
                ],
                dtype=np.float64,
            )
            for m in models
        }
        return LabelSet(
            prompts=texts,
            scores=scores,
            groups=[self.prompts[t].group for t in texts],
            source=self.source,
        )

    def jsonl(self) -> bytes:
        """The documented JSONL label format, one line per prompt, plus ``feedback``: the number
        of scores averaged per model (``router train --data`` ignores it)."""
        if not self.prompts:
            raise FeedbackError(self._empty_reason())
        lines = []
        for text, entry in self.prompts.items():
            item: dict[str, object] = {
                "prompt": text,
                "scores": {m: entry.sums[m] / entry.counts[m] for m in sorted(entry.counts)},
                "feedback": {m: entry.counts[m] for m in sorted(entry.counts)},
            }
            if entry.group:
                item["group"] = entry.group
            lines.append(orjson.dumps(item))
        return b"\n".join(lines) + b"\n"

    def _empty_reason(self) -> str:
        if self.feedback_rows == 0:
            return (
                f"no feedback in {self.source} (in the time and route asked for); send answers' "
                "x-request-id with a score to POST /v1/feedback first"
            )
        if self.used == 0 and (self.no_prompt or self.no_request):
            return f"{self.summary()}: none has a prompt to learn from"
        return f"{self.summary()}: nothing usable"


def parse_since(text: str, now: float | None = None) -> float:
    """``30m``, ``24h``, ``7d``, ``2w`` ago, or an ISO date/time (UTC unless it says) → Unix seconds."""
    match = _DURATION.match(text)
    if match is not None:
        return (time.time() if now is None else now) - int(match.group(1)) * _SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FeedbackError(
            f"--since {text!r}: give a duration like 24h, 7d or 2w, or a date like 2026-11-01"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def public_url(url: str) -> str:
    """The database URL without a password, for messages and router files."""
    if url.startswith("sqlite:///"):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def _text_of(prompt: str) -> str | None:
    """The text the router reads from a captured request body (JSON text); None if unreadable."""
    try:
        body = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        return None  # cut at max_capture_bytes, so no longer JSON
    if isinstance(body, dict):
        text = prompt_text(body)
    elif isinstance(body, str):
        text = body
    else:
        return None
    return text if text.strip() else None


async def collect(
    store: Store, source: str, *, since: float = 0.0, route: str | None = None
) -> FeedbackLabels:
    """Read every feedback row since ``since`` (on ``route`` only, if given) with its prompt."""
    rows = await store.feedback(since=since, limit=MAX_FEEDBACK_ROWS)
    out = FeedbackLabels(source, feedback_rows=len(rows))
    wanted: list[FeedbackRow] = []
    for row in rows:
        if route is not None and row.route != route:
            out.other_route += 1
        else:
            wanted.append(row)
    for start in range(0, len(wanted), _LOOKUPS_AT_ONCE):
        chunk = wanted[start : start + _LOOKUPS_AT_ONCE]
        requests: Sequence[RequestRow | None] = await asyncio.gather(
            *(store.request_by_id(row.request_id) for row in chunk)
        )
        for row, request in zip(chunk, requests, strict=True):
            if request is None:
                out.no_request += 1
                continue
            if request.prompt is None:
                out.no_prompt += 1
                continue
            text = _text_of(request.prompt)
            if text is None:
                out.unreadable_prompt += 1
                continue
            model = row.model or request.model
            if not model:
                out.no_model += 1
                continue
            out.add(text, model, min(1.0, max(0.0, row.score)), row.task or "")
    return out


def read_feedback_labels(url: str, *, since: float = 0.0, route: str | None = None) -> FeedbackLabels:
    """Open the database at ``url`` (a SQLite file must already exist), collect, close."""
    shown = public_url(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise FeedbackError(
                f"no database at {path}; give the gateway's database with --database-url "
                "sqlite:///PATH (or --config, to use its storage.database)"
            )
    elif not url.startswith(("postgresql://", "postgres://")):
        raise FeedbackError(
            f"--database-url {shown!r} is neither sqlite:///PATH nor postgresql://…; "
            "give the gateway's database"
        )
    return asyncio.run(_read(url, shown, since, route))


async def _read(url: str, shown: str, since: float, route: str | None) -> FeedbackLabels:
    from modelyard.store.factory import store_for

    store = store_for(url)
    try:
        await store.open()
    except Exception as exc:  # any driver's failure to connect or migrate: one clear line
        reason = str(exc).strip() or type(exc).__name__
        password = urlsplit(url).password if not url.startswith("sqlite:///") else None
        if password:
            reason = reason.replace(password, "***")
        with contextlib.suppress(Exception):
            await store.aclose()
        raise FeedbackError(f"cannot open the database {shown}: {reason}") from None
    try:
        return await collect(store, shown, since=since, route=route)
    finally:
        await store.aclose()

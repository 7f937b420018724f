"""The per-request decision of a smart route: rules → task → learned router or bandit → a model.

Everything that costs CPU (scanning the request for personal data, the classifier, the learned
router) runs in a small thread pool; the embedding runs in the embedding model's own pool; the
event loop only awaits. The embedding-dependent part (task guess, P(strong)) is cached per route
and identical prompt (LRU), so a repeated prompt skips the model entirely; rules are evaluated
on every request, as they depend on the whole body and the caller.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.errors import PermissionDeniedError
from modelyard.routing.smart import rules as rules_mod
from modelyard.routing.smart.bandit import NO_TASK
from modelyard.routing.smart.learned.features import STATIC_CHARS
from modelyard.routing.smart.routes import Route
from modelyard.routing.smart.rules import RequestFacts, Restriction
from modelyard.routing.smart.tasks import TaskGuess

log = logging.getLogger("modelyard.smart")


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the (cacheable) content analysis found."""

    guess: TaskGuess | None = None
    p_strong: float | None = None
    unavailable: str | None = None
    """Why the classifier could not run (the embedding model is missing, say), if it could not."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Which model a routed request went to, and why."""

    route: str
    model: str
    reason: str
    """Bounded label: ``task:<name>``, ``fallback``, ``learned:strong|weak``, ``target``,
    ``best``, ``explore``; ``+rule:<names>`` when rules restricted the candidates."""
    detail: str
    """The reason with its numbers (confidence, P(strong), quality), for the header and logs."""
    task: str
    """The bandit bucket: the task if sure, else ``""``."""
    local_only: bool
    rules: tuple[str, ...]
    key_id: str | None
    created_at: float

    def header(self) -> str:
        """``auto -> local; reason=task:extraction; task=extraction(extraction 0.91)``."""
        text = f"{self.route} -> {self.model}; reason={self.reason}"
        return f"{text}; {self.detail}" if self.detail else text


class PromptCache:
    """LRU of analyses per identical prompt (event-loop only: no lock needed)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, Analysis] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> Analysis | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: bytes, analysis: Analysis) -> None:
        if self.size <= 0:
            return
        self._items[key] = analysis
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def prompt_key(route: str, prompt: str) -> bytes:
    return hashlib.blake2b(f"{route}\x00{prompt}".encode(errors="replace"), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Scan:
    """The off-loop scan of one request: its rule restriction and its prompt text."""

    restriction: Restriction
    prompt: str


def scan(route: Route, body: Mapping[str, Any], facts: RequestFacts) -> Scan:
    """Rules and prompt text of one request (CPU work: run in the decision pool)."""
    restriction = Restriction()
    if route.config.rules:
        needs_text = any(r.when.pii for r in route.config.rules)
        text = rules_mod.request_text(body) if needs_text else ""
        restriction = rules_mod.evaluate(route.config.rules, text, facts)
    # As much of the prompt as the learned router's static bag reads (it was trained on whole
    # prompts); the MiniLM input is bounded by its token window, whatever this length.
    return Scan(restriction, rules_mod.prompt_text(body, limit=STATIC_CHARS))


def analyse(route: Route, prompt: str, vector: Any) -> Analysis:
    """Task guess and P(strong) from the prompt and its embedding (CPU work: the decision pool)."""
    guess = None
    if route.classifier is not None and vector is not None:
        guess = route.classifier.classify(np.asarray(vector, dtype=np.float32))
    p_strong = None
    if route.learned is not None:
        p_strong = float(
            route.learned.score(prompt, None if vector is None else np.asarray(vector, dtype=np.float32))
        )
    return Analysis(guess, p_strong)


def allowed_candidates(route: Route, restriction: Restriction, key_models: Sequence[str] | None) -> list[str]:
    out = []
    for c in route.candidates:
        if restriction.local_only and not c.local:
            continue
        if restriction.allowed is not None and c.name not in restriction.allowed:
            continue
        if key_models is not None and c.name not in key_models and route.name not in key_models:
            continue
        out.append(c.name)
    return out


def refuse(route: Route, restriction: Restriction) -> PermissionDeniedError:
    names = ", ".join(restriction.matched) or "(none)"
    if restriction.blocked_by is not None:
        return PermissionDeniedError(
            f"route {route.name!r}: rule {restriction.blocked_by!r} blocks this request (matched: {names}); "
            "remove what the rule matches, or change the route's rules in the config",
            code="routing_rule",
        )
    what = "local models" if restriction.local_only else "the models its rules allow"
    return PermissionDeniedError(
        f"route {route.name!r}: rules {names} allow only {what}, and no candidate of the route "
        "qualifies (or the key may not use one); the request was not sent anywhere. Add a local "
        "model (e.g. `local`) to the route's candidates, or remove what the rule matches",
        code="routing_rule",
    )


def choose(
    route: Route,
    restriction: Restriction,
    analysis: Analysis,
    allowed: list[str],
    *,
    key_id: str | None = None,
    now: float | None = None,
) -> Decision:
    """The decision, from the rules' restriction and the content analysis (cheap: on the loop)."""
    if restriction.blocked_by is not None or not allowed:
        raise refuse(route, restriction)
    config = route.config
    guess = analysis.guess
    task = guess.task if guess is not None and guess.task is not None else NO_TASK
    detail = ""
    if guess is not None:
        detail = (
            f"task={guess.task or 'unsure'}({guess.best} {guess.confidence:.2f} sim={guess.similarity:.2f})"
        )
    elif analysis.unavailable:
        detail = f"task=unavailable({analysis.unavailable})"
    model: str | None = None
    reason = ""
    task_model = config.tasks[task].model if task else None
    if task_model is not None and task_model in allowed:
        model, reason = task_model, f"task:{task}"
    elif guess is not None and guess.task is None and config.fallback in allowed:
        model, reason = config.fallback, "fallback"
    elif analysis.p_strong is not None and config.router is not None and route.learned_threshold is not None:
        strong = analysis.p_strong >= route.learned_threshold
        wanted = config.router.strong if strong else config.router.weak
        detail += f" p_strong={analysis.p_strong:.3f}/thr={route.learned_threshold:.3f}"
        if wanted in allowed:
            model, reason = wanted, "learned:strong" if strong else "learned:weak"
    if model is None:
        relative = {c.name: c.relative_cost for c in route.candidates}
        pick = route.bandit.choose(task, allowed, relative, config.quality_target)
        model = pick.model
        reason = "explore" if pick.explored else ("target" if pick.meets_target else "best")
        detail += f" q={pick.quality:.2f}/target={config.quality_target:g}"
    if restriction.matched:
        reason += "+rule:" + ",".join(r.split("(", 1)[0] for r in restriction.matched)
        detail += " rules=" + ",".join(restriction.matched)
    return Decision(
        route.name,
        model,
        reason,
        detail.strip(),
        task,
        restriction.local_only,
        restriction.matched,
        key_id,
        time.time() if now is None else now,
    )


__all__ = [
    "Analysis",
    "Decision",
    "PromptCache",
    "Scan",
    "allowed_candidates",
    "analyse",
    "choose",
    "prompt_key",
    "refuse",
    "scan",
]

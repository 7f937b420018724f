"""The ``routes:`` section of the config: named smart routes a request reaches with ``model: <route>``.

Example::

    routes:
      auto:
        candidates: [local, gpt-4o-mini, gpt-4o]   # served model names (cost from the price book)
        quality_target: 0.8                        # the one knob
        tasks:                                     # optional: what a request is → which model
          extraction: {model: local}               # built-in examples for well-known task names
          code: {examples: ["Write a Python function that ...", "Fix this bug: ..."], model: gpt-4o}
        min_confidence: 0.5
        fallback: gpt-4o-mini                      # when the task classifier is unsure
        rules:
          - name: personal-data
            when: {pii: [email, phone, card, iban, ssn]}
            action: local_only
          - when: {tags: [confidential]}
            action: local_only
        bandit: {enabled: true, exploration: 0.1, cost_weight: 0.1}
        embeddings: all-MiniLM-L6-v2               # /v1/embeddings with model: auto

The decision runs in this order: rules (which candidates are allowed) → task (a confident task
with a model pins it) → learned strong-vs-weak router (if ``router`` is set) → otherwise the
cheapest allowed candidate whose expected quality (prior, updated by ``POST /v1/feedback``)
meets ``quality_target``. See docs/smart-routing.md.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}$")

PiiKind = Literal["email", "phone", "card", "iban", "ssn"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Strict):
    """One kind of request (a task) the route recognises from a few example utterances."""

    examples: list[str] = Field(default_factory=list)
    """Example requests of this task (a handful is enough). Left empty for a built-in task name
    (classification, extraction, code, math, summarisation, translation, chat), the shipped
    examples are used."""
    model: str | None = None
    """The candidate that serves this task (default: none — the task only labels the request,
    and the quality target / bandit decide per task)."""


class RuleWhen(_Strict):
    """Conditions of a rule: every condition given must hold (within a list, any item may match)."""

    pii: list[PiiKind] = Field(default_factory=list)
    """Personal data found anywhere in the request text (system, messages, tool calls and
    results, text blocks of multimodal messages): e-mail addresses, phone numbers, payment cards
    (Luhn-checked), IBANs (mod-97-checked), US social security numbers."""
    tags: list[str] = Field(default_factory=list)
    """Any of these tags on the request (header ``x-modelyard-tags: a,b`` or ``metadata.tags``)
    or on the calling key."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Every one of these key/value pairs in the request's ``metadata`` or the key's metadata."""
    team: list[str] = Field(default_factory=list)
    """The calling key belongs to one of these teams."""
    key: list[str] = Field(default_factory=list)
    """The calling key's id or name is one of these."""

    @model_validator(mode="after")
    def _not_empty(self) -> RuleWhen:
        if not (self.pii or self.tags or self.metadata or self.team or self.key):
            raise ValueError("a rule needs at least one condition: pii, tags, metadata, team or key")
        return self


class RuleConfig(_Strict):
    """A data-governance rule: when it matches, the allowed candidates shrink."""

    name: str | None = None
    """Shown in the decision reason and error messages (default: ``rule<index>``)."""
    when: RuleWhen
    action: Literal["local_only", "restrict", "block"] = "local_only"
    """``local_only`` (default): only models served by local deployments (llamacpp, vllm, ollama,
    llamacpp-server, or tagged ``local``), fallbacks and hedges included; with none, the request
    is refused (403) and never sent to a cloud model. ``restrict``: only ``models``.
    ``block``: refuse the request (403)."""
    models: list[str] = Field(default_factory=list)
    """The models allowed by ``restrict``."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"rule name {value!r} must be 1-64 letters, digits and ._:/@+-")
        return value

    @model_validator(mode="after")
    def _models_for_restrict(self) -> RuleConfig:
        if self.action == "restrict" and not self.models:
            raise ValueError("action: restrict needs `models: [...]`, the models still allowed")
        return self


class LearnedRouterConfig(_Strict):
    """A strong-vs-weak router trained with ``modelyard router train``."""

    file: str
    """The router file written by ``modelyard router train``."""
    strong: str
    """The candidate used when the router says the strong model is needed."""
    weak: str
    """The candidate used otherwise."""
    strong_share: float | None = Field(None, ge=0, le=1)
    """Target share of requests sent to ``strong`` (the threshold calibrated on the router's
    training prompts); default 0.5 unless ``threshold`` is given."""
    threshold: float | None = Field(None, ge=0, le=1)
    """Send to ``strong`` when P(strong needed) ≥ this (instead of ``strong_share``)."""


class BanditConfig(_Strict):
    """Online learning from ``POST /v1/feedback``: Thompson sampling per route and task."""

    enabled: bool = True
    """Learn from feedback and explore (default true). Off: decisions use the priors only."""
    exploration: float = Field(0.1, ge=0, le=1)
    """Largest share of decisions drawn from the posterior instead of its mean (default 0.1):
    bounds how often a request may go to a model that is not the current best choice."""
    cost_weight: float = Field(0.1, ge=0)
    """The cost penalty when no candidate is expected to meet the quality target: the choice
    maximises quality − cost_weight × relative cost (the candidate's price over the costliest
    one's); default 0.1. (When some candidates meet it, the cheapest of them is chosen.)"""
    prior_strength: float = Field(4.0, gt=0)
    """How many feedback scores the prior quality is worth (default 4)."""


class RouteConfig(_Strict):
    """A route: a name clients send as ``model``, served by the best of its candidates."""

    candidates: list[str] = Field(default_factory=list)
    """Served model names this route may choose from (default: every chat model)."""
    quality_target: float = Field(0.7, ge=0, le=1)
    """The knob (0..1): choose the cheapest candidate whose expected quality is at least this
    (default 0.7). Higher: more traffic to stronger, costlier models."""
    quality: dict[str, float] = Field(default_factory=dict)
    """Prior expected quality per candidate, 0..1 (default: 0.5 for local models; cloud models
    spread from 0.6 for the cheapest to 0.9 for the costliest). Feedback moves it."""
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)
    """Task name → examples and model."""
    min_confidence: float = Field(0.5, ge=0, le=1)
    """Below this classifier confidence the task is "unsure" (default 0.5)."""
    fallback: str | None = None
    """Candidate used when the task is unsure (default: none — decide by quality target)."""
    rules: list[RuleConfig] = Field(default_factory=list)
    router: LearnedRouterConfig | None = None
    bandit: BanditConfig = Field(default_factory=BanditConfig)
    embeddings: str | None = None
    """Embedding model used for ``/v1/embeddings`` requests naming this route (default: the
    embedded all-MiniLM-L6-v2 when served)."""
    cache_size: int = Field(4096, ge=0)
    """Decisions kept per identical prompt (LRU; default 4,096; 0 disables the cache)."""
    prompt_input: Literal["window", "full"] = "window"
    """What the task classifier reads of a prompt when the route has no learned router (a router
    file records its own): ``window`` (default) = MiniLM over the first 48 and last 14 word pieces,
    a bounded cost (~12 ms p99 on two cores, whatever the prompt's length); ``full`` = the first 254
    word pieces, a little more accurate on fuzzy tasks (MMLU subject groups with 10 examples each:
    0.626 vs 0.585) but up to ~28 ms p99 on long prompts (benchmarks/RESULTS.md)."""

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, value: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"task name {name!r} must be 1-64 letters, digits and ._:/@+-")
        return value

    @field_validator("quality")
    @classmethod
    def _quality(cls, value: dict[str, float]) -> dict[str, float]:
        for name, q in value.items():
            if not 0 <= q <= 1:
                raise ValueError(f"quality of {name!r} must be within 0..1, not {q}")
        return value


def check_route_name(name: str) -> str | None:
    """An error message if ``name`` cannot be a route name."""
    if not _NAME.match(name):
        return f"route name {name!r} must be 1-64 letters, digits and ._:/@+-"
    return None


__all__ = [
    "BanditConfig",
    "LearnedRouterConfig",
    "PiiKind",
    "RouteConfig",
    "RuleConfig",
    "RuleWhen",
    "TaskConfig",
    "check_route_name",
]

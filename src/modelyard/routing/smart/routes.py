"""Routes: checking the ``routes:`` config against the served models, the zero-config ``auto``
route, and the runtime route objects (candidates with their cost, locality and prior quality)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.config.routes_schema import BanditConfig, RouteConfig, TaskConfig, check_route_name
from modelyard.routing.smart.bandit import Bandit
from modelyard.routing.smart.tasks import TaskClassifier, examples_for

AUTO_ROUTE = "auto"
PRIOR_LOCAL = 0.5
"""Prior quality of a local candidate when the config gives none: local models are usually the
small ones (and a CPU-bound local model can even cost more per token than a small cloud one)."""
PRIOR_LOW, PRIOR_HIGH = 0.6, 0.9
"""Prior quality of the cheapest and the costliest cloud candidate when the config gives none."""

LineOf = Callable[[tuple[int | str, ...]], str]
"""Where a config location is, as ``file:line`` (given by the loader)."""


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What route checks need to know about one served model name."""

    canonical: str
    chat: bool
    embeddings: bool
    local: bool
    """Whether it has at least one local chat deployment."""


def check_routes(
    routes: Mapping[str, RouteConfig], models: Mapping[str, ModelFacts], where: LineOf, base_dir: Path
) -> list[str]:
    """Every problem with the routes, each with its file and line, saying how to fix it."""
    chat = sorted({f.canonical for f in models.values() if f.chat})
    problems: list[str] = []
    for name, route in routes.items():
        problems += _check_route(name, route, models, where, base_dir, chat)
    return problems


def _check_route(
    name: str,
    route: RouteConfig,
    models: Mapping[str, ModelFacts],
    where: LineOf,
    base_dir: Path,
    chat: list[str],
) -> list[str]:
    problems: list[str] = []
    at = ("routes", name)
    bad_name = check_route_name(name)
    if bad_name:
        problems.append(f"{where(at)}: {bad_name}")
    if name in models:
        problems.append(
            f"{where(at)}: route {name!r} has the name of a served model; rename the route or the model"
        )

    def need_chat(model: str, loc: tuple[int | str, ...], what: str) -> None:
        facts = models.get(model)
        if facts is None or not facts.chat:
            problems.append(
                f"{where(loc)}: {what} {model!r} is not a served chat model; "
                f"served: {', '.join(chat) or '(none)'}"
            )

    for index, candidate in enumerate(route.candidates):
        need_chat(candidate, (*at, "candidates", index), "candidate")
    allowed = set(route.candidates) if route.candidates else set(chat)

    def need_candidate(model: str, loc: tuple[int | str, ...], what: str) -> None:
        need_chat(model, loc, what)
        if model in models and models[model].chat and model not in allowed and route.candidates:
            problems.append(f"{where(loc)}: {what} {model!r} is not one of the route's candidates")

    for task, config in route.tasks.items():
        try:
            examples_for(task, config.examples)
        except ValueError as exc:
            problems.append(f"{where((*at, 'tasks', task))}: {exc}")
        if config.model is not None:
            need_candidate(config.model, (*at, "tasks", task, "model"), f"task {task!r} model")
    if route.fallback is not None:
        need_candidate(route.fallback, (*at, "fallback"), "fallback")
    for model in route.quality:
        need_candidate(model, (*at, "quality", model), "quality for")
    for index, rule in enumerate(route.rules):
        for m_index, model in enumerate(rule.models):
            need_chat(model, (*at, "rules", index, "models", m_index), "rule model")
    if route.router is not None:
        need_candidate(route.router.strong, (*at, "router", "strong"), "router strong model")
        need_candidate(route.router.weak, (*at, "router", "weak"), "router weak model")
        path = router_path(route.router.file, base_dir)
        if not path.is_file():
            problems.append(
                f"{where((*at, 'router', 'file'))}: router file {str(path)!r} does not exist; "
                "train one with `modelyard router train`"
            )
    if route.embeddings is not None:
        facts = models.get(route.embeddings)
        if facts is None or not facts.embeddings:
            problems.append(
                f"{where((*at, 'embeddings'))}: {route.embeddings!r} is not a served embedding model"
            )
    if not allowed:
        problems.append(f"{where(at)}: route {name!r} has no candidates and no chat model is served")
    return problems


def router_path(file: str, base_dir: Path) -> Path:
    path = Path(file).expanduser()
    return path if path.is_absolute() else base_dir / path


def default_routes(models: Mapping[str, ModelFacts], local_chat_model: str) -> dict[str, RouteConfig]:
    """Zero-config ``auto``: every chat model, cheapest that meets the default quality target;
    classification and extraction go to the embedded local model when it is served."""
    if AUTO_ROUTE in models:
        return {}
    chat = list(dict.fromkeys(f.canonical for f in models.values() if f.chat))
    if not chat:
        return {}
    tasks: dict[str, TaskConfig] = {}
    if local_chat_model in chat and len(chat) > 1:
        tasks = {
            "classification": TaskConfig(model=local_chat_model),
            "extraction": TaskConfig(model=local_chat_model),
        }
    local_embedders = [f for f in models.values() if f.embeddings and f.local]
    dedicated = [f for f in local_embedders if not f.chat]  # an embedding model, not a fake
    embeddings = next((f.canonical for f in dedicated or local_embedders), None)
    return {AUTO_ROUTE: RouteConfig(candidates=chat, tasks=tasks, embeddings=embeddings)}


@dataclass(slots=True)
class Candidate:
    name: str
    cost_pico: int
    """Blended price per token (input + output), integer pico-dollars: for ranking only."""
    local: bool
    prior: float
    relative_cost: float = 0.0
    """cost / the costliest candidate's cost (0..1)."""


@dataclass(slots=True)
class Route:
    """A route at run time."""

    name: str
    config: RouteConfig
    candidates: list[Candidate]
    """Cheapest first."""
    bandit: Bandit
    task_examples: dict[str, list[str]]
    classifier: TaskClassifier | None = None
    learned: Any = None
    """modelyard.routing.smart.learned.runtime.LearnedRouter, when ``router:`` is set."""
    learned_threshold: float | None = None
    by_name: dict[str, Candidate] = field(default_factory=dict)

    @property
    def needs_embedding(self) -> bool:
        return bool(self.task_examples) or bool(getattr(self.learned, "needs_embedding", False))


def build_route(
    name: str,
    config: RouteConfig,
    chat_models: Sequence[str],
    cost_of: Callable[[str], int],
    local_of: Callable[[str], bool],
    *,
    rng: random.Random | None = None,
) -> Route:
    names = list(config.candidates) or list(chat_models)
    candidates = sorted(
        (Candidate(m, cost_of(m), local_of(m), 0.0) for m in names), key=lambda c: (c.cost_pico, not c.local)
    )
    top = max((c.cost_pico for c in candidates), default=0)
    cloud_costs = sorted({c.cost_pico for c in candidates if not c.local})
    for c in candidates:
        c.relative_cost = c.cost_pico / top if top else 0.0
        if c.local:
            default = PRIOR_LOCAL
        else:
            rank = cloud_costs.index(c.cost_pico) / (len(cloud_costs) - 1) if len(cloud_costs) > 1 else 1.0
            default = PRIOR_LOW + (PRIOR_HIGH - PRIOR_LOW) * rank
        c.prior = config.quality.get(c.name, default)
    b: BanditConfig = config.bandit
    bandit = Bandit(
        {c.name: c.prior for c in candidates},
        prior_strength=b.prior_strength,
        exploration=b.exploration if b.enabled else 0.0,
        cost_weight=b.cost_weight,
        enabled=b.enabled,
        rng=rng or random.Random(),
    )
    examples = {task: examples_for(task, t.examples) for task, t in config.tasks.items()}
    return Route(name, config, candidates, bandit, examples, by_name={c.name: c for c in candidates})


__all__ = [
    "AUTO_ROUTE",
    "Candidate",
    "ModelFacts",
    "Route",
    "build_route",
    "check_routes",
    "default_routes",
    "router_path",
]


def model_facts(models: Sequence[Any]) -> dict[str, ModelFacts]:
    """Served name (aliases included) → facts, from the (raw) model configs."""
    from modelyard.config.schema import OnnxEmbeddingsDeployment, OpenAIDeployment
    from modelyard.routing.router import policy_for

    out: dict[str, ModelFacts] = {}
    for model in models:
        chat = embeddings = local = False
        for dep in model.deployments:
            serves_chat = not isinstance(dep, OnnxEmbeddingsDeployment) and not (
                isinstance(dep, OpenAIDeployment) and dep.embeddings
            )
            serves_embeddings = (
                isinstance(dep, OnnxEmbeddingsDeployment)
                or getattr(dep, "embeddings", False)
                or dep.provider == "fake"
            )
            chat |= serves_chat
            embeddings |= serves_embeddings
            local |= policy_for(dep).local
        for name in (model.name, *model.aliases):
            out.setdefault(name, ModelFacts(model.name, chat, embeddings, local))
    return out


def resolve_routes(
    raw: Mapping[str, RouteConfig],
    models: Sequence[Any],
    *,
    auto_route: bool,
    local_chat_model: str,
    where: LineOf,
    base_dir: Path,
) -> tuple[dict[str, RouteConfig], list[str]]:
    """The routes to serve (the configured ones, plus the zero-config ``auto``) and the problems."""
    facts = model_facts(models)
    problems = check_routes(raw, facts, where, base_dir)
    routes = dict(raw)
    if auto_route and AUTO_ROUTE not in routes:
        routes.update(default_routes(facts, local_chat_model))
    return routes, problems

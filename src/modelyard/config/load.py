"""Phase two of the configuration: raw YAML → validated schema → frozen runtime config.

Secrets are resolved here (``env:VAR`` / ``file:/path``); a missing one is an error that names the
variable. Every problem is reported at once, each with its file and line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from modelyard.config.cache_schema import CacheConfig, ModelCacheConfig
from modelyard.config.context_schema import ContextConfig, context_problems
from modelyard.config.conversations_schema import ConversationsConfig
from modelyard.config.defaults import LOCAL_CHAT_MODEL, cloud_models, embedded_models
from modelyard.config.routes_schema import RouteConfig, RuleConfig
from modelyard.config.schema import (
    Deployment,
    GatewayConfig,
    ModelConfig,
    ObservabilityConfig,
    RateLimitConfig,
    RequestLogConfig,
    RoutingConfig,
    ServerConfig,
    StorageConfig,
    TeamLimits,
)
from modelyard.errors import ConfigError
from modelyard.routing.smart.routes import resolve_routes

CONFIG_ENV_VAR = "MODELYARD_CONFIG"
MASTER_KEY_ENV_VAR = "MODELYARD_MASTER_KEY"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str
    aliases: tuple[str, ...]
    deployments: tuple[Deployment, ...]
    secrets: tuple[str | None, ...]
    """Resolved API key of each deployment (same order), None where there is none."""
    routing: RoutingConfig
    cache: ModelCacheConfig | None = None
    context: ContextConfig = field(default_factory=ContextConfig)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The configuration the running gateway uses: validated, secrets resolved, names unique."""

    server: ServerConfig
    models: tuple[ResolvedModel, ...]
    master_key: str | None
    default_model: str | None
    source: str
    database_url: str = ""
    """``sqlite:///absolute/path.db`` or a resolved PostgreSQL DSN."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    lease_journal_dir: str = ""
    """Absolute directory of the budget-lease journals (``storage.reservations: leased``)."""
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    redis_url: str | None = None
    teams: dict[str, TeamLimits] = field(default_factory=dict)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    """As configured, except that ``tracing.otlp_headers`` hold the resolved secret values."""
    request_log: RequestLogConfig = field(default_factory=RequestLogConfig)
    conversations: ConversationsConfig = field(default_factory=ConversationsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    cache_redis_url: str | None = None
    """The resolved URL of the cache's Redis (``cache.backend: redis``)."""
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    """Smart routes by name, the zero-config ``auto`` included (checked against the models)."""
    rules: tuple[RuleConfig, ...] = ()
    """Gateway-wide data rules (top-level ``rules:``); also prepended to every route's rules."""

    def model_names(self) -> list[str]:
        return [m.name for m in self.models]


def resolve_secret(reference: str, environ: Mapping[str, str], where: str) -> str:
    """The value behind ``env:VAR`` or ``file:/path``; raises ValueError saying how to fix it."""
    if reference.startswith("env:"):
        var = reference[4:]
        value = environ.get(var)
        if not value:
            raise ValueError(f"{where}: environment variable {var} is not set; export {var}=... and restart")
        return value
    if reference.startswith("file:"):
        path = Path(reference[5:])
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{where}: cannot read secret file {path}: {exc.strerror}") from None
    raise ValueError(f"{where}: not a secret reference; write env:VARIABLE or file:/path")


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (or its nearest parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            matches = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not matches:
                # Discriminated unions add the tag ("openai") as a location part: skip it.
                continue
            key, node = matches[-1]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            # Discriminated unions add the tag ("openai") as a location part: skip it.
            continue
    return line


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("openai", "anthropic", "llamacpp", "onnx-embeddings", "fake"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return ({} if data is None else data), node


def validate_raw(data: Any, node: yaml.Node | None, source: str) -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the top level must be a mapping (server:, models:, ...)"])
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling and indentation; see README's config section)"
            problems.append(f"{where}: {_format_loc(loc)}: {msg}")
        raise ConfigError(problems) from None


def resolve(
    raw: GatewayConfig, environ: Mapping[str, str], source: str, node: yaml.Node | None = None
) -> RuntimeConfig:
    """Add defaults, check cross references, resolve secrets. Raises ConfigError listing all problems."""
    problems: list[str] = []
    models: list[ModelConfig] = list(raw.models)
    taken = {n for m in models for n in (m.name, *m.aliases)}
    if raw.cloud_models_from_env:
        models += [m for m in cloud_models(environ) if m.name not in taken]
    if raw.embedded_models:
        models += [m for m in embedded_models() if m.name not in taken]

    seen: dict[str, str] = {}
    resolved: list[ResolvedModel] = []
    for index, model in enumerate(models):
        for name in (model.name, *model.aliases):
            if name in seen:
                problems.append(f"{source}: models[{index}]: name {name!r} is already used by {seen[name]!r}")
            seen[name] = model.name
        secrets: list[str | None] = []
        for d_index, dep in enumerate(model.deployments):
            ref = getattr(dep, "api_key", None)
            if ref is None:
                secrets.append(None)
                continue
            try:
                secrets.append(
                    resolve_secret(ref, environ, f"models[{index}].deployments[{d_index}].api_key")
                )
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
                secrets.append(None)
        resolved.append(
            ResolvedModel(
                model.name,
                tuple(model.aliases),
                tuple(model.deployments),
                tuple(secrets),
                model.routing,
                cache=model.cache,
                context=model.context,
            )
        )
    problems += context_problems(models, seen, source)
    for index, model in enumerate(models):
        for other in (*model.routing.fallbacks, model.routing.context_fallback):
            if other is not None and other not in seen:
                problems.append(
                    f"{source}: models[{index}].routing: fallback {other!r} is not a configured model"
                )
            if other is not None and seen.get(other) == model.name:
                problems.append(
                    f"{source}: models[{index}].routing: {model.name!r} cannot fall back to itself"
                )

    master_key: str | None = None
    if raw.server.master_key is not None:
        try:
            master_key = resolve_secret(raw.server.master_key, environ, "server.master_key")
        except ValueError as exc:
            problems.append(f"{source}: {exc}")
    elif environ.get(MASTER_KEY_ENV_VAR):
        master_key = environ[MASTER_KEY_ENV_VAR]

    default_model = raw.default_model
    if default_model is not None and default_model not in seen:
        problems.append(f"{source}: default_model {default_model!r} is not a configured model name")
    if default_model is None and resolved:
        default_model = LOCAL_CHAT_MODEL if LOCAL_CHAT_MODEL in seen else resolved[0].name
    database_url = default_database_url(environ)
    if raw.storage.database is not None:
        database = raw.storage.database
        if database.startswith("sqlite:///"):
            database_url = "sqlite:///" + str(
                Path(database.removeprefix("sqlite:///")).expanduser().absolute()
            )
        else:
            try:
                database_url = resolve_secret(database, environ, "storage.database")
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
            if database_url and not database_url.startswith(("postgresql://", "postgres://", "sqlite:///")):
                problems.append(
                    f"{source}: storage.database must resolve to a postgresql:// DSN or sqlite:///path"
                )
    lease_journal_dir = lease_journal_directory(raw.storage.lease_journal, database_url, environ)
    redis_url: str | None = None
    if raw.rate_limits.backend == "redis":
        if raw.rate_limits.redis_url is None:
            problems.append(f"{source}: rate_limits.redis_url is required with backend: redis")
        else:
            try:
                redis_url = resolve_secret(raw.rate_limits.redis_url, environ, "rate_limits.redis_url")
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
    cache_redis_url: str | None = None
    if raw.cache.backend == "redis":
        reference = raw.cache.redis_url or raw.rate_limits.redis_url
        if reference is None:
            problems.append(f"{source}: cache.redis_url is required with cache.backend: redis")
        else:
            try:
                cache_redis_url = resolve_secret(reference, environ, "cache.redis_url")
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
    observability = raw.observability
    if observability.tracing.otlp_headers:
        headers: dict[str, str] = {}
        for name, ref in observability.tracing.otlp_headers.items():
            try:
                headers[name] = resolve_secret(ref, environ, f"observability.tracing.otlp_headers.{name}")
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
        tracing = observability.tracing.model_copy(update={"otlp_headers": headers})
        observability = observability.model_copy(update={"tracing": tracing})
    routes, route_problems = resolve_routes(
        raw.routes,
        models,
        auto_route=raw.auto_route,
        local_chat_model=LOCAL_CHAT_MODEL,
        where=lambda loc: f"{source}:{_line_of(node, loc) or 1}" if node is not None else source,
        base_dir=Path(source).parent if not source.startswith("<") else Path(),
    )
    problems += route_problems
    served = {name for m in resolved for name in (m.name, *m.aliases)}
    for r_index, rule in enumerate(raw.rules):
        for m_index, rule_model in enumerate(rule.models):
            if rule_model not in served:
                loc = ("rules", r_index, "models", m_index)
                where = f"{source}:{_line_of(node, loc) or 1}" if node is not None else source
                listed = ", ".join(sorted(served))
                problems.append(f"{where}: rule model {rule_model!r} is not a served model; served: {listed}")
    if raw.rules:
        routes = {n: r.model_copy(update={"rules": [*raw.rules, *r.rules]}) for n, r in routes.items()}
    if problems:
        raise ConfigError(problems)
    return RuntimeConfig(
        raw.server,
        tuple(resolved),
        master_key,
        default_model,
        source,
        database_url,
        raw.storage,
        lease_journal_dir,
        raw.rate_limits,
        redis_url,
        dict(raw.teams),
        observability,
        request_log=raw.request_log,
        conversations=raw.conversations,
        cache=raw.cache,
        cache_redis_url=cache_redis_url,
        routes=routes,
        rules=tuple(raw.rules),
    )


def default_database_url(environ: Mapping[str, str]) -> str:
    """``$MODELYARD_HOME/modelyard.db`` (MODELYARD_HOME defaults to ~/.local/share/modelyard)."""
    home = environ.get("MODELYARD_HOME") or str(Path("~/.local/share/modelyard").expanduser())
    return "sqlite:///" + str(Path(home).expanduser().absolute() / "modelyard.db")


def lease_journal_directory(configured: str | None, database_url: str, environ: Mapping[str, str]) -> str:
    """``storage.lease_journal``, else ``<db>.leases`` beside SQLite, else
    ``$MODELYARD_HOME/leases-<hash of the PostgreSQL user, host, port and database>``."""
    if configured:
        return str(Path(configured).expanduser().absolute())
    if database_url.startswith("sqlite:///"):
        return database_url.removeprefix("sqlite:///") + ".leases"
    # One directory per database: a process must never replay another database's leases. The
    # name hashes where the database is, without the password.
    where = urlsplit(database_url)
    identity = f"{where.username}@{where.hostname}:{where.port}{where.path}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    home = environ.get("MODELYARD_HOME") or str(Path("~/.local/share/modelyard").expanduser())
    return str(Path(home).expanduser().absolute() / f"leases-{digest}")


def load_config(
    text: str | None, *, source: str = "<zero-config>", environ: Mapping[str, str] | None = None
) -> RuntimeConfig:
    """Load from YAML text (None = zero config)."""
    env = os.environ if environ is None else environ
    if text is None:
        return resolve(GatewayConfig(), env, source)
    data, node = _parse_yaml(text, source)
    return resolve(validate_raw(data, node, source), env, source, node)


def load_config_file(
    path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None
) -> RuntimeConfig:
    """Load the file at ``path``, or at $MODELYARD_CONFIG, or zero config when neither is given."""
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_ENV_VAR)
    if not chosen:
        return load_config(None, environ=env)
    file = Path(chosen)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read the config file: {exc.strerror}"]) from None
    return load_config(text, source=str(file), environ=env)

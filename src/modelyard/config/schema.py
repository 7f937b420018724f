"""The raw configuration schema: exactly what the YAML file may say, nothing more.

Every model is strict (unknown keys are errors). Secrets are *references*: ``env:VAR`` or
``file:/path``, never literal values. A provider is chosen with the ``provider`` key.

Example::

    server:
      port: 4000
      master_key: env:MODELYARD_MASTER_KEY
    models:
      - name: gpt-4o
        deployments:
          - provider: openai
            model: gpt-4o
            api_key: env:OPENAI_API_KEY
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.config.cache_schema import CacheConfig, ModelCacheConfig
from modelyard.config.context_schema import ContextConfig
from modelyard.config.conversations_schema import ConversationsConfig
from modelyard.config.routes_schema import RouteConfig, RuleConfig

_SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def _check_secret_ref(value: str | None) -> str | None:
    if value is None:
        return None
    if not _SECRET_REF.match(value):
        raise ValueError(
            "secrets are references, not values: write `env:VARIABLE_NAME` (and export the "
            "variable) or `file:/path/to/secret`"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """How the gateway listens and what it accepts."""

    host: str = "127.0.0.1"
    """Interface to bind (default 127.0.0.1: loopback only)."""
    port: int = Field(4000, ge=1, le=65535)
    """TCP port (default 4000)."""
    master_key: str | None = None
    """Secret reference of the key callers must send (default: none, or MODELYARD_MASTER_KEY)."""
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    """Largest request body accepted, checked before buffering (default 20 MiB)."""
    max_messages: int = Field(2048, ge=1)
    """Most messages one request may carry (default 2,048)."""
    max_output_tokens: int = Field(1_000_000, ge=1)
    """Largest ``max_tokens`` a request may ask for (default 1,000,000)."""
    request_timeout_s: float = Field(600.0, gt=0)
    """Overall deadline of one upstream call, seconds (default 600)."""
    connect_timeout_s: float = Field(3.0, gt=0)
    """TCP/TLS connect timeout to upstreams, seconds (default 3)."""
    default_anthropic_max_tokens: int = Field(4096, ge=1)
    """``max_tokens`` sent to Anthropic models when an OpenAI caller gives none (default 4096)."""


Money = Annotated[str | int | float, Field(union_mode="left_to_right")]


class PricingConfig(_Strict):
    """Prices of one deployment, USD per million tokens; each field left out keeps the shipped
    catalog's figure (an upstream model the catalog does not know needs input and output)."""

    input_per_mtok: Money | None = None
    output_per_mtok: Money | None = None
    cache_read_per_mtok: Money | None = None
    cache_write_per_mtok: Money | None = None
    cache_write_1h_per_mtok: Money | None = None
    """Anthropic's 1-hour cache writes (default: the 5-minute rate)."""


class HardwareConfig(_Strict):
    """What a self-hosted deployment's machine costs; its tokens are priced from this and the
    throughput modelyard measures. Nothing given: $0.0475 per vCPU-hour × the machine's vCPUs.
    ``usd_per_hour: 0`` makes the deployment free."""

    usd_per_hour: Money | None = None
    """All-in cost per hour (a rental or cloud instance price)."""
    purchase_usd: Money | None = None
    """Purchase price, written off over ``amortization_months``."""
    amortization_months: int = Field(36, ge=1)
    power_watts: Money | None = None
    """Average draw under load, watts (charged at ``usd_per_kwh``)."""
    usd_per_kwh: Money = "0.15"
    utilization_target: Money = "1"
    """Expected busy share of the hour, in (0, 1]: below 1, requests also carry idle time."""
    vcpus: int | None = Field(None, ge=1)


class _Routed(_Strict):
    """What every deployment may say about how traffic reaches it (the load-balancing fields)."""

    priority: int = 0
    """Tier: lower goes first; a higher tier takes traffic only when all lower ones cannot (spill-over)."""
    weight: float = Field(1.0, ge=0)
    """Share of traffic under the ``weighted`` strategy (default 1)."""
    max_concurrency: int | None = Field(None, ge=1)
    """Most requests in flight here (default: 64 for HTTP upstreams, ``workers`` for llamacpp)."""
    max_queue: int | None = Field(None, ge=0)
    """Requests waiting for a slot before the deployment counts as saturated (default 2 × max_concurrency)."""
    max_queue_wait_s: float = Field(1.0, ge=0)
    """Longest wait in that queue before trying elsewhere or answering 503 (default 1 s)."""
    spill_after_s: float | None = Field(None, ge=0)
    """Spill to the next tier when the expected queue wait here exceeds this, seconds
    (default: spill only when saturated)."""
    ttfb_timeout_s: float | None = Field(None, gt=0)
    """Longest wait for a stream's first event (default 30 s; 120 s for local models)."""
    idle_timeout_s: float = Field(30.0, gt=0)
    """Longest gap between stream events after the first (default 30 s)."""
    cost_per_mtok: float | None = Field(None, ge=0)
    """Blended USD per million tokens, used by the ``lowest_cost`` strategy."""
    tags: list[str] = Field(default_factory=list)
    """Free labels (``local``, ``eu``, ...) shown in the deployment state."""
    pricing: PricingConfig | None = None
    """Override the shipped price catalog for this deployment."""
    hardware: HardwareConfig | None = None
    """For self-hosted deployments (llamacpp, vllm, ollama, llamacpp-server, or tagged ``local``):
    the machine's cost, from which per-token prices are derived."""
    prompt_cache_ttl_s: float | None = Field(None, gt=0)
    """How long this deployment keeps a prompt prefix cached, seconds: how long prompt-cache
    affinity (``routing.affinity``) keeps a conversation's home here (default: the model's
    ``affinity.ttl_s``, else the vendor's lifetime: Anthropic 300, or 3600 for requests asking
    ``cache_control`` ttl 1h; OpenAI 300; self-hosted 600)."""


class OpenAIDeployment(_Routed):
    """OpenAI, or any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted vendors)."""

    provider: Literal["openai"]
    model: str
    """Model name sent upstream."""
    preset: Literal["openai", "vllm", "llamacpp-server", "ollama", "custom"] = "openai"
    """Fills ``base_url`` when omitted: openai → https://api.openai.com/v1, vllm →
    http://127.0.0.1:8000/v1, llamacpp-server → http://127.0.0.1:8080/v1, ollama →
    http://127.0.0.1:11434/v1."""
    base_url: str | None = None
    api_key: str | None = None
    """Secret reference (``env:OPENAI_API_KEY``); none for servers without auth."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra static headers sent upstream (from config only, never from requests)."""
    timeout_s: float | None = Field(None, gt=0)
    """Per-call deadline, seconds (default: server.request_timeout_s)."""
    context_window: int | None = Field(None, ge=1)
    embeddings: bool = False
    """Whether this deployment serves /v1/embeddings."""

    _check_key = field_validator("api_key")(classmethod(lambda cls, v: _check_secret_ref(v)))


class AnthropicDeployment(_Routed):
    """Anthropic's native Messages API."""

    provider: Literal["anthropic"]
    model: str
    base_url: str = "https://api.anthropic.com"
    api_key: str | None = None
    """Secret reference (``env:ANTHROPIC_API_KEY``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)
    context_window: int | None = Field(None, ge=1)

    _check_key = field_validator("api_key")(classmethod(lambda cls, v: _check_secret_ref(v)))


class LlamaCppDeployment(_Routed):
    """A GGUF model run in-process-tree by llama.cpp worker processes."""

    provider: Literal["llamacpp"]
    path: str | None = None
    """GGUF file; none = the embedded SmolLM2-135M-Instruct."""
    n_ctx: int = Field(8192, ge=256)
    """Context window in tokens (default 8192)."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes, each serving one request at a time (default 1)."""
    threads: int | None = Field(None, ge=1)
    """CPU threads per worker (default: llama.cpp's choice)."""
    max_queue: int = Field(64, ge=0)
    """Requests waiting for a worker before new ones get 503 (default 64)."""


class OnnxEmbeddingsDeployment(_Routed):
    """The embedded all-MiniLM-L6-v2 embedding model (ONNX int8, 384 dimensions)."""

    provider: Literal["onnx-embeddings"]


class FakeDeployment(_Routed):
    """A scripted provider for tests; its ``model`` name chooses the behaviour."""

    provider: Literal["fake"]
    model: str = "echo"
    protocol: Literal["openai", "anthropic"] = "openai"


Deployment = Annotated[
    OpenAIDeployment | AnthropicDeployment | LlamaCppDeployment | OnnxEmbeddingsDeployment | FakeDeployment,
    Field(discriminator="provider"),
]


class RetryConfig(_Strict):
    """Retries on the same deployment: full-jitter backoff within a per-deployment budget."""

    backoff_base_s: float = Field(0.25, ge=0)
    backoff_cap_s: float = Field(4.0, ge=0)
    budget_ratio: float = Field(0.2, ge=0, le=1)
    """Retries allowed as a share of first attempts over ``budget_window_s`` (default 20 %)."""
    budget_min_per_s: float = Field(3.0, ge=0)
    """Retries always allowed per second, however quiet the deployment (default 3)."""
    budget_window_s: float = Field(10.0, gt=0)


class BreakerConfig(_Strict):
    """Circuit breaker (outlier ejection) per deployment."""

    consecutive_failures: int = Field(5, ge=1)
    base_open_s: float = Field(30.0, gt=0)
    """Open time is base_open_s × times opened (default 30 s), capped at max_open_s (default 300 s)."""
    max_open_s: float = Field(300.0, gt=0)


class AffinityConfig(_Strict):
    """Prompt-cache affinity: send a conversation's next turn to the deployment that served it
    last while that deployment's prompt cache holds it and it has a free slot (see
    docs/prompt-cache-affinity.md)."""

    mode: Literal["none", "conversation", "prefix"] = "none"
    """``conversation``: only requests naming their conversation (``x-modelyard-conversation``
    header or ``conversation_id``); ``prefix``: those, and every other request keyed by a hash of
    its system prompt, tools and first user turn; ``none`` (default): plain balancing."""
    ttl_s: float | None = Field(None, gt=0)
    """How long a conversation stays with its deployment after its last turn, seconds (default:
    each deployment's ``prompt_cache_ttl_s``, else its vendor's cache lifetime)."""
    prefix_user_turns: int = Field(1, ge=1, le=16)
    """User messages, from the first, that make up the prefix key (default 1)."""
    max_entries: int = Field(100_000, ge=1)
    """Conversations remembered per model, least recently used forgotten first (default 100,000,
    about 25 MB)."""


class RoutingConfig(_Strict):
    """How a model's requests are spread over its deployments and what happens on failure."""

    strategy: Literal[
        "p2c_ewma", "least_outstanding", "weighted", "round_robin", "random", "lowest_cost", "priority"
    ] = "p2c_ewma"
    """Balancing within a priority tier (default p2c_ewma: power of two choices on EWMA latency ×
    (in-flight + 1), with a failure penalty)."""
    sticky: Literal["none", "user", "conversation"] = "none"
    """Keep a user (``user`` / ``metadata.user_id``) or a conversation (its first message) on one
    deployment while it stays available (default none)."""
    max_attempts: int = Field(3, ge=1, le=5)
    """Attempts per request, retries and fallbacks together (default 3)."""
    fallbacks: list[str] = Field(default_factory=list)
    """Other model names tried, in order, when this model's deployments fail."""
    context_fallback: str | None = None
    """Model tried when an upstream says the prompt is too long (a larger-context model)."""
    deadline_s: float = Field(300.0, gt=0)
    """Overall deadline of a request, all attempts and waits included (default 300 s)."""
    hedge_after_s: float | None = Field(None, gt=0)
    """Send a second attempt to another deployment if the first has no first byte after this long
    (off by default: it can double the token cost)."""
    mid_stream_failover: bool = False
    """Continue a text stream that fails after its first byte on another deployment, from the
    text already sent, instead of ending it with an error event (default off)."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    """Prompt-cache-aware routing (off by default); it takes precedence over ``sticky``."""


class ModelConfig(_Strict):
    """A name clients send, served by one or more deployments."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    """Other names that reach the same deployments."""
    deployments: list[Deployment] = Field(min_length=1)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    cache: ModelCacheConfig | None = None
    """This model's changes to the global ``cache:`` settings (docs/caching.md)."""
    context: ContextConfig = Field(default_factory=ContextConfig)
    """What happens when a request outgrows this model's context window (docs/context.md)."""

    @field_validator("name", "aliases")
    @classmethod
    def _names(cls, value: str | list[str]) -> str | list[str]:
        for name in [value] if isinstance(value, str) else value:
            if not _MODEL_NAME.match(name):
                raise ValueError(
                    f"model name {name!r} must be 1-128 characters of letters, digits and ._:/@+-"
                )
        return value


class StorageConfig(_Strict):
    """Where keys, budgets and the ledger live."""

    database: str | None = None
    """``sqlite:///path.db`` (relative to the working directory, or absolute), or a PostgreSQL DSN
    as a secret reference (``env:MODELYARD_DATABASE_URL``: a DSN may carry a password).
    Default: ``$MODELYARD_HOME/modelyard.db``, where MODELYARD_HOME defaults to
    ``~/.local/share/modelyard``. PostgreSQL is for several gateway processes or machines sharing
    budgets and reports."""
    durable_admission: Literal["budgeted", "always"] = "budgeted"
    """When the pending reservation is committed before the upstream call: only for requests a
    budget applies to (default; others are recorded when they finish), or for every request. With
    ``reservations: leased`` the request's record in the lease journal is what is written first."""
    sqlite_synchronous: Literal["full", "normal"] = "full"
    """SQLite only: ``full`` (default) fsyncs every commit, so an admitted reservation survives a
    power cut as well as ``kill -9``; ``normal`` skips the fsync — commits still survive a crashed
    or killed process, but the last ones can be lost to a power cut or OS crash (their requests are
    then missing from the ledger, not double-counted). ``normal`` saves the fsync: up to about 0.1 ms
    of CPU and 0.2–2 ms of latency per commit (``benchmarks/ledger_floor.py``; through the gateway
    −0.10 ms/request at 16 concurrent clients, within noise at one)."""

    reservations: Literal["per_request", "leased"] = "per_request"
    """How a budgeted request's maximum cost is reserved before the upstream call. ``per_request``
    (default): in the database, one commit per request (and one to settle it). ``leased``: each
    process reserves a *lease* on the budgets for many requests at once and admits requests from it
    in memory, writing each to a local journal (``lease_journal``) before the upstream call; budgets
    still hold across processes (never over the limit), ``kill -9`` is settled exactly from the
    journal on the next start, and the database sees two commits per lease instead of two per
    request. Ledger rows then reach the database when a lease settles, about ``lease_max_age_s``
    after the request. With the ``redis`` rate-limit backend, RPM/TPM capacity is leased the same
    way (for up to 1 s), so a request in steady traffic makes no Redis round trip either (README,
    "Budget leases")."""
    lease_max_age_s: float = Field(0.5, gt=0, le=60)
    """``leased`` only: how long a lease admits requests (default 0.5 s). Shorter: ledger rows land
    sooner and a lease held by one process blocks another's requests less near a budget's end;
    longer: fewer commits."""
    lease_journal: str | None = None
    """``leased`` only: the directory of the lease journals. Default: ``<database file>.leases``
    beside a SQLite database; with PostgreSQL ``$MODELYARD_HOME/leases-<hash>``, one per database
    address (user, host, port, name; never the password). Every process of a host must use the same
    one: a starting process settles the journals of processes that stopped."""

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is None or value.startswith(("sqlite:///", "env:", "file:")):
            return value
        raise ValueError(
            "database must be sqlite:///path.db, or a PostgreSQL DSN given as a secret reference "
            "(env:VARIABLE or file:/path), since a DSN can carry a password"
        )


class RateLimitConfig(_Strict):
    """Where RPM/TPM counters live."""

    backend: Literal["memory", "redis"] = "memory"
    """``memory`` for one gateway process (default); ``redis`` when several share the limits. With
    ``storage.reservations: leased`` each process leases capacity from Redis (README, "Budget
    leases"): the limits hold as strictly, and capacity one process holds unused can refuse
    another's request for up to ``storage.lease_max_age_s`` (at most 1 s)."""
    redis_url: str | None = None
    """Secret reference to the Redis URL (``env:MODELYARD_REDIS_URL``), required for ``redis``."""
    fail_open: bool = False
    """If Redis is unreachable: admit requests (true) or answer 503 (false, default)."""

    _check_url = field_validator("redis_url")(classmethod(lambda cls, v: _check_secret_ref(v)))


class TeamLimits(_Strict):
    """Rate limits shared by every key of one team (keys carry their own limits too)."""

    rpm: int | None = Field(None, ge=1)
    """Requests per minute (sliding 60-second window)."""
    tpm: int | None = Field(None, ge=1)
    """Tokens per minute: admission counts the prompt estimate + max_tokens, settled to actual."""


class TracingConfig(_Strict):
    """OpenTelemetry traces: one span per request, a child span per upstream attempt (off by default)."""

    enabled: bool = False
    """Build and export spans (default false)."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP traces URL, e.g. ``http://127.0.0.1:4318/v1/traces`` (default: none, nothing is
    exported). Taken from this file only, never from the environment or a request."""
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    """Headers sent to the collector; each value a secret reference (``env:OTLP_TOKEN``)."""
    service_name: str = "modelyard"
    """``service.name`` of the spans (default ``modelyard``)."""
    capture_content: bool = False
    """Put prompts and answers on spans, only for requests whose capture is on (default false)."""
    sample_ratio: float = Field(1.0, ge=0, le=1)
    """Fraction of requests traced (default 1.0: all)."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("otlp_endpoint must be an http:// or https:// URL (OTLP over HTTP)")
        return value

    @field_validator("otlp_headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value.values():
            _check_secret_ref(header)
        return value


class ObservabilityConfig(_Strict):
    """Metrics, traces and request logs."""

    metrics_auth: bool = False
    """Require an admin or viewer key for ``GET /metrics`` when a master key is set (default false:
    open, as Prometheus scrapers often cannot send one; keep the port private then)."""
    log_format: Literal["text", "json"] = "text"
    """One line per request: ``text`` (the access log, default) or ``json`` (structured, redacted)."""
    log_file: str | None = None
    """Where JSON request lines go (default: stderr)."""
    budget_refresh_s: float = Field(15.0, ge=0.05, le=3600)
    """How often the remaining-budget gauges are re-read from the store, seconds (default 15)."""
    tracing: TracingConfig = Field(default_factory=TracingConfig)


class RequestLogConfig(_Strict):
    """The stored request log behind ``GET /admin/requests`` and the dashboard at ``/ui``."""

    enabled: bool = True
    """Store one row per inference request (default true)."""
    capture_prompts: bool = False
    """Store every request's prompt and answer (default false: only for keys created with
    ``store_prompts: true``). Captured text is redacted of key-shaped strings and known secrets."""
    retention_days: float = Field(30.0, gt=0)
    """Rows older than this are purged in the background (default 30 days)."""
    max_capture_bytes: int = Field(65536, ge=0)
    """Longest prompt or answer stored, UTF-8 bytes; longer ones are cut (default 64 KiB)."""
    purge_interval_s: float = Field(3600.0, gt=0)
    """How often the retention purge runs, seconds (default 1 hour)."""
    max_queue: int = Field(100_000, ge=1)
    """Records waiting to be written before new ones are dropped and counted (default 100,000);
    only reached when the database stays unavailable."""
    batch_linger_ms: float = Field(20.0, ge=0, le=1000)
    """How long a finished request's row may wait for others before it is written, ms (default
    20): rows are written in batches even at low traffic, one transaction for many requests
    instead of one each. 0 writes each row as soon as the writer is free."""


class GatewayConfig(_Strict):
    """The whole file."""

    teams: dict[str, TeamLimits] = Field(default_factory=dict)
    """Team id → its shared rate limits."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    conversations: ConversationsConfig = Field(default_factory=ConversationsConfig)
    """Server-side conversations and stored ``/v1/responses`` answers."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """Response caching, exact and semantic (off by default; docs/caching.md)."""
    models: list[ModelConfig] = Field(default_factory=list)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    """Smart routes: names clients send as ``model`` that pick the cheapest candidate expected to
    answer well (docs/smart-routing.md). Default: an ``auto`` route over every chat model, unless
    a model is named ``auto`` (see ``auto_route``)."""
    auto_route: bool = True
    """Add the zero-config ``auto`` route when no route or model has that name (default true)."""
    rules: list[RuleConfig] = Field(default_factory=list)
    """Data rules for EVERY chat and embeddings request, whichever model or route it names (a
    route's own ``rules:`` see only requests naming that route; these are checked first and also
    apply inside every route). E.g. ``- when: {pii: [email, phone, card, iban, ssn]}`` with
    ``action: local_only``, or ``- when: {tags: [confidential]}``: such a request is served by
    local deployments only — or refused with a 403 naming the rule when the named model has
    none — and never reaches a cloud vendor (docs/smart-routing.md)."""
    embedded_models: bool = True
    """Add the embedded chat model (``local``) and embedding model (``all-MiniLM-L6-v2``) unless a
    model of that name is configured (default true)."""
    cloud_models_from_env: bool = True
    """Add OpenAI / Anthropic models when OPENAI_API_KEY / ANTHROPIC_API_KEY are set (default true)."""
    default_model: str | None = None
    """The model ``modelyard chat`` talks to by default (default: ``local`` if served, else the first).
    Requests always name their model; an unknown name gets a 404 listing the served ones."""

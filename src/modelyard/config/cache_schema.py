"""The ``cache:`` section (response caching) and the per-model ``cache:`` override.

Example::

    cache:
      enabled: true              # exact cache for every model (off by default)
      backend: sqlite            # memory (default) | sqlite | redis
      ttl_s: 3600
      semantic:
        enabled: false           # opt in per model (below) or for all
        target_precision: 0.9    # → threshold 0.96; or set threshold: 0.98
    models:
      - name: support-bot
        cache:
          semantic: {enabled: true}   # opt this model in to the semantic cache
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["CacheConfig", "ModelCacheConfig", "SemanticCacheConfig", "SemanticOverride"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_target_precision(value: float | None) -> float | None:
    if value is not None and not 0.8 <= value <= 0.9:
        raise ValueError(
            "target_precision must be between 0.8 and 0.9: the measured curve (docs/caching.md) has "
            "no threshold above 0.9 precision on its benchmark; for stricter caching set `threshold` "
            "(e.g. 0.98) instead"
        )
    return value


class SemanticCacheConfig(_Strict):
    """Answers for questions that mean the same as one already answered (opt-in)."""

    enabled: bool = False
    """Look up by meaning as well as exactly (default false). Risk: a false hit answers a
    different question; see docs/caching.md for the measured false-hit rate per threshold."""
    threshold: float | None = Field(None, gt=0, le=1)
    """Cosine similarity (all-MiniLM-L6-v2) a cached question must reach. Default: chosen from
    ``target_precision``."""
    target_precision: float = 0.9
    """When no ``threshold`` is set: the lowest threshold whose hits were at least this precise
    on the Quora duplicate-question benchmark: 0.8 → 0.90, 0.85 → 0.93, 0.9 → 0.96 (default 0.9;
    see docs/caching.md). For stricter caching set ``threshold`` (e.g. 0.98)."""
    context_threshold: float = Field(0.97, gt=0, le=1)
    """For follow-ups: how similar the earlier turns must be (default 0.97: after a different but
    similar first question, 0.3 % of identical follow-ups matched at 0.97 and 1.3 % at 0.95)."""
    max_entries: int = Field(10_000, ge=1)
    """Entries per partition (tenant × model × parameters × system prompt × numbers); the oldest is
    overwritten when full (default 10,000)."""
    include_tools: bool = False
    """Also answer requests that carry tools by meaning (default false: a tool call's arguments
    usually depend on details a paraphrase changes)."""
    lookup_timeout_s: float = Field(0.25, gt=0)
    """The most a semantic lookup (embedding the request, searching) may add to a request; past
    it the request goes on as a miss (default 0.25 s; measured p50 ~20 ms on 2 busy cores)."""

    @field_validator("target_precision")
    @classmethod
    def _target(cls, value: float) -> float:
        _check_target_precision(value)
        return value


class SemanticOverride(_Strict):
    """A model's changes to the global semantic settings (unset fields inherit)."""

    enabled: bool | None = None
    """Match this model's requests by meaning (turns the model's exact cache on too)."""
    threshold: float | None = Field(None, gt=0, le=1)
    """This model's cosine threshold (default: the global one)."""
    target_precision: float | None = None
    """This model's target precision, when it sets no ``threshold``."""
    include_tools: bool | None = None
    """Match requests that carry tools by meaning too (default: the global setting)."""

    @field_validator("target_precision")
    @classmethod
    def _target(cls, value: float | None) -> float | None:
        return _check_target_precision(value)


class CacheConfig(_Strict):
    """Response caching: answer repeated requests without calling the model again."""

    enabled: bool = False
    """Cache answers for every model (default false; a model's ``cache.enabled`` overrides).
    Cached answers are per tenant: the key's team, else the key; never shared across tenants."""
    backend: Literal["memory", "sqlite", "redis"] = "memory"
    """memory: this process, lost on restart (default). sqlite: ``path``, survives restarts.
    redis: ``redis_url``, shared by every replica."""
    ttl_s: float = Field(3600.0, gt=0)
    """How long an answer is served from cache (default 3600 s)."""
    max_entries: int = Field(10_000, ge=1)
    """memory and sqlite: entries kept (default 10,000); past it memory drops the least recently
    used, SQLite the oldest stored."""
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    """memory: total size of cached answers (default 256 MiB)."""
    max_entry_bytes: int = Field(1024 * 1024, ge=1024)
    """Answers larger than this are not cached (default 1 MiB)."""
    path: str | None = None
    """sqlite: the cache file (default ``$MODELYARD_HOME/cache.db``, never the ledger's file)."""
    redis_url: str | None = None
    """redis: a secret reference to the URL (``env:MODELYARD_CACHE_REDIS_URL``); default: the
    ``rate_limits.redis_url`` when that is set."""
    redis_prefix: str = "modelyard:cache:"
    """redis: the prefix of every key (default ``modelyard:cache:``); gateways that must not
    share answers use different prefixes."""
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)

    @field_validator("redis_url")
    @classmethod
    def _redis_reference(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("env:", "file:")):
            raise ValueError(
                "redis_url is a secret reference (a URL may carry a password): write "
                "`env:MODELYARD_CACHE_REDIS_URL` and export the variable, or `file:/path`"
            )
        return value


class ModelCacheConfig(_Strict):
    """A model's changes to the global ``cache:`` settings (unset fields inherit)."""

    enabled: bool | None = None
    """Cache this model's answers (default: the global ``cache.enabled``)."""
    ttl_s: float | None = Field(None, gt=0)
    """How long this model's answers are served from cache (default: the global ``ttl_s``)."""
    semantic: SemanticOverride | None = None
    """This model's semantic-cache settings (unset fields inherit the global ``semantic``)."""

    @model_validator(mode="after")
    def _semantic_needs_cache(self) -> ModelCacheConfig:
        if self.enabled is False and self.semantic is not None and self.semantic.enabled:
            raise ValueError("semantic caching needs the cache: drop `enabled: false` or `semantic.enabled`")
        return self

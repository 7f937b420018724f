"""Response caching: exact (tenant + model + every output-changing parameter + normalised
conversation) and semantic (by meaning, opt-in per model). See docs/caching.md."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from modelyard.cache.service import CacheLookup, ModelCachePolicy, ResponseCache

if TYPE_CHECKING:
    from modelyard.config.load import RuntimeConfig
    from modelyard.providers.registry import Registry

__all__ = ["CacheLookup", "ModelCachePolicy", "ResponseCache", "cache_for"]


def cache_for(config: RuntimeConfig, registry: Registry) -> ResponseCache | None:
    """The gateway's response cache, or None when no model is cached (the default)."""
    models = {}
    for model in config.models:
        for name in (model.name, *model.aliases):
            models[name] = model.cache
    home = os.environ.get("MODELYARD_HOME") or "~/.local/share/modelyard"
    return ResponseCache.build(
        config.cache,
        models,
        home=home,
        redis_url=config.cache_redis_url,
        embedder=registry.shared_embeddings,
    )

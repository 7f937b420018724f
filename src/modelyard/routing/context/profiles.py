"""Per deployment: its context window and the counter that measures prompts for it.

The window comes from, in order: the deployment's ``context_window`` (OpenAI / Anthropic), a
llamacpp deployment's ``n_ctx``, the shipped catalog (``accounting/catalog.json``,
``context_window`` per model). A deployment with no known window is never fitted (its upstream
still answers a too-long prompt with its own error, which ``routing.context_fallback`` handles).

Counters are shared: one GGUF vocabulary per file, one cl100k_base encoding per process, loaded
lazily (in a worker thread) the first time a prompt is large enough to need an exact count.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from modelyard.accounting.catalog import CATALOG_RESOURCE, model_name_candidates
from modelyard.config.schema import (
    AnthropicDeployment,
    Deployment,
    LlamaCppDeployment,
    OpenAIDeployment,
)
from modelyard.routing.context.counting import (
    ANTHROPIC_FORMAT,
    OPENAI_FORMAT,
    GGUFCounter,
    TokenCounter,
)
from modelyard.routing.context.tokenizers import (
    ANTHROPIC_PER_CL100K,
    EstimateTokenizer,
    GGUFTokenizer,
    TiktokenTokenizer,
    cl100k_encoding,
)

__all__ = ["CounterSpec", "Counters", "DeploymentProfile", "catalog_windows", "counter_spec_for"]

# OpenAI models whose own encoding is cl100k_base (cl100k counts are exact for them).
_CL100K_MODELS = re.compile(r"^(gpt-4(?!o|\.|-o)|gpt-3\.5|text-embedding-3|text-embedding-ada)")


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """Which counter a deployment needs: ``gguf`` (with its path), ``cl100k``, ``cl100k-o200k``
    (cl100k_base standing in for o200k_base), ``anthropic`` (cl100k × calibration) or ``estimate``."""

    kind: str
    path: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentProfile:
    label: str
    window: int | None
    window_source: str
    """``config``, ``n_ctx``, ``catalog`` or ``unknown``."""
    counter: CounterSpec


def catalog_windows() -> dict[tuple[str, str], int]:
    """(provider, model) → context window, from the shipped catalog (aliases included)."""
    raw = orjson.loads(resources.files("modelyard.accounting").joinpath(CATALOG_RESOURCE).read_bytes())
    out: dict[tuple[str, str], int] = {}
    for provider, section in raw["providers"].items():
        for model, entry in section["models"].items():
            window = entry.get("context_window")
            if isinstance(window, int):
                out[(provider, model)] = window
                for alias in entry.get("aliases", ()):
                    out[(provider, alias.lower())] = window
    return out


def _catalog_window(windows: dict[tuple[str, str], int], provider: str, model: str) -> int | None:
    for candidate in model_name_candidates(provider, model):
        if (provider, candidate) in windows:
            return windows[(provider, candidate)]
    return None


def counter_spec_for(dep: Deployment, tokenizer: str, embedded_path: Callable[[], str]) -> CounterSpec:
    if tokenizer == "cl100k_base":
        return CounterSpec("cl100k")
    if tokenizer == "estimate":
        return CounterSpec("estimate")
    if isinstance(dep, LlamaCppDeployment):
        try:
            return CounterSpec("gguf", dep.path or embedded_path())
        except FileNotFoundError:
            return CounterSpec("estimate")
    if isinstance(dep, AnthropicDeployment):
        return CounterSpec("anthropic")
    if isinstance(dep, OpenAIDeployment) and dep.preset == "openai":
        return CounterSpec("cl100k" if _CL100K_MODELS.match(dep.model.lower()) else "cl100k-o200k")
    return CounterSpec("estimate")


def profile_for(
    dep: Deployment,
    label: str,
    windows: dict[tuple[str, str], int],
    tokenizer: str,
    embedded_path: Callable[[], str],
) -> DeploymentProfile:
    spec = counter_spec_for(dep, tokenizer, embedded_path)
    configured = getattr(dep, "context_window", None)
    if isinstance(configured, int):
        return DeploymentProfile(label, configured, "config", spec)
    if isinstance(dep, LlamaCppDeployment):
        return DeploymentProfile(label, dep.n_ctx, "n_ctx", spec)
    provider = None
    if isinstance(dep, AnthropicDeployment):
        provider, model = "anthropic", dep.model
    elif isinstance(dep, OpenAIDeployment) and dep.preset == "openai":
        provider, model = "openai", dep.model
    if provider is not None:
        window = _catalog_window(windows, provider, model)
        if window is not None:
            return DeploymentProfile(label, window, "catalog", spec)
    return DeploymentProfile(label, None, "unknown", spec)


class Counters:
    """The process's counters, built once each on first use (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[CounterSpec, TokenCounter] = {}
        self._cl100k: Any = None

    def loaded(self, spec: CounterSpec) -> TokenCounter | None:
        return self._built.get(spec)

    def get(self, spec: CounterSpec) -> TokenCounter:
        """The counter for ``spec`` (loading a GGUF vocabulary or the cl100k table blocks: call
        from a worker thread unless :meth:`loaded` says it is there)."""
        counter = self._built.get(spec)
        if counter is not None:
            return counter
        with self._lock:
            counter = self._built.get(spec)
            if counter is None:
                counter = self._build(spec)
                self._built[spec] = counter
            return counter

    def _encoding(self) -> Any:
        if self._cl100k is None:
            self._cl100k = cl100k_encoding()
        return self._cl100k

    def _build(self, spec: CounterSpec) -> TokenCounter:
        if spec.kind == "gguf":
            return GGUFCounter(GGUFTokenizer(spec.path))
        if spec.kind == "cl100k":
            return TokenCounter(TiktokenTokenizer(self._encoding()), OPENAI_FORMAT)
        if spec.kind == "cl100k-o200k":
            tokenizer = TiktokenTokenizer(self._encoding(), name="cl100k_base~o200k_base", exact=False)
            return TokenCounter(tokenizer, OPENAI_FORMAT)
        if spec.kind == "anthropic":
            tokenizer = TiktokenTokenizer(
                self._encoding(), name="anthropic-estimate", exact=False, scale=ANTHROPIC_PER_CL100K
            )
            return TokenCounter(tokenizer, ANTHROPIC_FORMAT)
        return TokenCounter(EstimateTokenizer(), OPENAI_FORMAT)

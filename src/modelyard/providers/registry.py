"""Builds one provider per deployment from the runtime config and resolves model names."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from modelyard.config.load import ResolvedModel, RuntimeConfig
from modelyard.config.schema import (
    AnthropicDeployment,
    Deployment,
    FakeDeployment,
    LlamaCppDeployment,
    OnnxEmbeddingsDeployment,
    OpenAIDeployment,
)
from modelyard.errors import ModelNotFoundError
from modelyard.providers.base import Provider, WireProtocol
from modelyard.redact import Redactor


@dataclass(frozen=True, slots=True)
class Target:
    """Where one model name is served: a provider and the model name it is sent."""

    name: str
    """The model's configured name (what aliases resolve to)."""
    provider: Provider
    upstream_model: str
    label: str
    """``provider/model``: reported in the ``x-modelyard-deployment`` header."""
    embeddings: bool
    chat: bool
    context_window: int | None


def _unique_labels(targets: list[Target], deployments: tuple[Deployment, ...]) -> list[Target]:
    """Replicas of one upstream model (several vLLM servers, say) get distinct labels within their
    group — ``openai/m@10.0.0.2:8000`` — since routing excludes, retries and books by label."""
    counts: dict[str, int] = {}
    for target in targets:
        counts[target.label] = counts.get(target.label, 0) + 1
    out: list[Target] = []
    seen: set[str] = set()
    for target, dep in zip(targets, deployments, strict=True):
        label = target.label
        if counts[label] > 1:
            base_url = getattr(dep, "base_url", None)
            if base_url:
                label = f"{label}@{urlsplit(base_url).netloc}"
            number = 2
            candidate = label
            while candidate in seen:
                candidate = f"{label}#{number}"
                number += 1
            label = candidate
        seen.add(label)
        out.append(replace(target, label=label) if label != target.label else target)
    return out


class Registry:
    """Model name → deployments. Local providers are shared between names that use the same file."""

    def __init__(self, config: RuntimeConfig, session: aiohttp.ClientSession, redact: Redactor) -> None:
        self._config = config
        self._session = session
        self._redact = redact
        self._local: dict[tuple[str, str | None], Provider] = {}
        self._targets: dict[str, list[Target]] = {}
        self.models: list[ResolvedModel] = list(config.models)
        for model in config.models:
            targets = _unique_labels(
                [
                    self._build(model, dep, secret)
                    for dep, secret in zip(model.deployments, model.secrets, strict=True)
                ],
                model.deployments,
            )
            for name in (model.name, *model.aliases):
                self._targets[name] = targets

    def _build(self, model: ResolvedModel, dep: Deployment, secret: str | None) -> Target:
        server = self._config.server
        if isinstance(dep, OpenAIDeployment):
            from modelyard.providers.openai import BASE_URL_PRESETS, OpenAIProvider

            base_url = dep.base_url or BASE_URL_PRESETS.get(dep.preset, BASE_URL_PRESETS["openai"])
            provider: Provider = OpenAIProvider(
                session=self._session,
                base_url=base_url,
                api_key=secret,
                headers=dep.headers,
                timeout_s=dep.timeout_s or server.request_timeout_s,
                redact=self._redact,
            )
            return Target(
                model.name,
                provider,
                dep.model,
                f"{dep.preset}/{dep.model}",
                dep.embeddings,
                not dep.embeddings,
                dep.context_window,
            )
        if isinstance(dep, AnthropicDeployment):
            from modelyard.providers.anthropic import AnthropicProvider

            provider = AnthropicProvider(
                session=self._session,
                base_url=dep.base_url,
                api_key=secret,
                headers=dep.headers,
                timeout_s=dep.timeout_s or server.request_timeout_s,
                redact=self._redact,
            )
            return Target(
                model.name, provider, dep.model, f"anthropic/{dep.model}", False, True, dep.context_window
            )
        if isinstance(dep, LlamaCppDeployment):
            key = ("llamacpp", dep.path)
            if key not in self._local:
                from modelyard.providers.llamacpp import LlamaCppProvider

                self._local[key] = LlamaCppProvider(
                    model_path=dep.path,
                    n_ctx=dep.n_ctx,
                    n_threads=dep.threads,
                    workers=dep.workers,
                    model_name=model.name,
                    max_queue=dep.max_queue,
                )
            label = "llamacpp/" + (
                dep.path.rsplit("/", 1)[-1] if dep.path else "SmolLM2-135M-Instruct.Q4_1.gguf"
            )
            return Target(model.name, self._local[key], model.name, label, False, True, dep.n_ctx)
        if isinstance(dep, OnnxEmbeddingsDeployment):
            key = ("onnx-embeddings", None)
            if key not in self._local:
                from modelyard.providers.embeddings import OnnxEmbeddingProvider

                self._local[key] = OnnxEmbeddingProvider()
            return Target(
                model.name, self._local[key], model.name, "onnx/all-MiniLM-L6-v2-int8", True, False, 256
            )
        assert isinstance(dep, FakeDeployment)
        from modelyard.providers.fake import FakeProvider

        provider = FakeProvider(protocol=WireProtocol(dep.protocol))
        return Target(model.name, provider, dep.model, f"fake/{dep.model}", True, True, None)

    def resolve(self, name: object, *, embeddings: bool = False) -> Target:
        """The first deployment of ``name``; ModelNotFoundError (404) if no model has that name."""
        targets = self._targets.get(name) if isinstance(name, str) else None
        if not targets:
            kind = "embedding" if embeddings else "chat"
            served = (
                ", ".join(
                    m.name
                    for m in self.models
                    if any((t.embeddings if embeddings else t.chat) for t in self._targets[m.name])
                )
                or "(none)"
            )
            raise ModelNotFoundError(
                f"model {name!r} is not served here; {kind} models: {served} (GET /v1/models lists them)"
            )
        for target in targets:
            if target.embeddings if embeddings else target.chat:
                return target
        what = "embeddings" if embeddings else "chat"
        raise ModelNotFoundError(f"model {name!r} does not serve {what}; GET /v1/models lists every model")

    def targets(self, name: str) -> list[Target]:
        """Every deployment of a configured model name (empty if unknown)."""
        return list(self._targets.get(name, []))

    def providers(self) -> list[Provider]:
        seen: dict[int, Provider] = {}
        for targets in self._targets.values():
            for target in targets:
                seen[id(target.provider)] = target.provider
        return list(seen.values())

    def local_providers(self) -> list[Provider]:
        return list(self._local.values())

    def shared_embeddings(self) -> Any:
        """The embedded MiniLM provider (an OnnxEmbeddingProvider), shared with the
        ``all-MiniLM-L6-v2`` model when it is served, so the model loads once."""
        key = ("onnx-embeddings", None)
        if key not in self._local:
            from modelyard.providers.embeddings import OnnxEmbeddingProvider

            self._local[key] = OnnxEmbeddingProvider()
        return self._local[key]

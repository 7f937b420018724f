"""Zero-config defaults: the embedded models, and cloud models when their key variables are set."""

from __future__ import annotations

from collections.abc import Mapping

from modelyard.config.schema import (
    AnthropicDeployment,
    LlamaCppDeployment,
    ModelConfig,
    OnnxEmbeddingsDeployment,
    OpenAIDeployment,
)

LOCAL_CHAT_MODEL = "local"
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"

# Names clients commonly send; each maps to the vendor's model of the same name.
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "o3")
OPENAI_EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-3-large")
ANTHROPIC_MODELS = (
    "claude-sonnet-4-5",
    "claude-opus-4-1",
    "claude-haiku-4-5",
    "claude-3-5-haiku-latest",
)


def embedded_models() -> list[ModelConfig]:
    return [
        ModelConfig(
            name=LOCAL_CHAT_MODEL,
            aliases=["smollm2-135m-instruct"],
            deployments=[LlamaCppDeployment(provider="llamacpp")],
        ),
        ModelConfig(
            name=LOCAL_EMBEDDING_MODEL,
            aliases=["text-embedding-local"],
            deployments=[OnnxEmbeddingsDeployment(provider="onnx-embeddings")],
        ),
    ]


def cloud_models(environ: Mapping[str, str]) -> list[ModelConfig]:
    """OpenAI and Anthropic models for whichever key variables are set."""
    models: list[ModelConfig] = []
    if environ.get("OPENAI_API_KEY"):
        base_url = environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        for name in OPENAI_MODELS:
            models.append(
                ModelConfig(
                    name=name,
                    deployments=[
                        OpenAIDeployment(
                            provider="openai", model=name, base_url=base_url, api_key="env:OPENAI_API_KEY"
                        )
                    ],
                )
            )
        for name in OPENAI_EMBEDDING_MODELS:
            models.append(
                ModelConfig(
                    name=name,
                    deployments=[
                        OpenAIDeployment(
                            provider="openai",
                            model=name,
                            base_url=base_url,
                            api_key="env:OPENAI_API_KEY",
                            embeddings=True,
                        )
                    ],
                )
            )
    if environ.get("ANTHROPIC_API_KEY"):
        base_url = environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        for name in ANTHROPIC_MODELS:
            models.append(
                ModelConfig(
                    name=name,
                    deployments=[
                        AnthropicDeployment(
                            provider="anthropic",
                            model=name,
                            base_url=base_url,
                            api_key="env:ANTHROPIC_API_KEY",
                        )
                    ],
                )
            )
    return models

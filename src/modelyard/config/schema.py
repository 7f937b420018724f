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
    max_messages: int = Field(10_000, ge=1)
    """Most messages one request may carry (default 10,000)."""
    max_output_tokens: int = Field(1_000_000, ge=1)
    """Largest ``max_tokens`` a request may ask for (default 1,000,000)."""
    request_timeout_s: float = Field(600.0, gt=0)
    """Overall deadline of one upstream call, seconds (default 600)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """TCP/TLS connect timeout to upstreams, seconds (default 10)."""
    default_anthropic_max_tokens: int = Field(4096, ge=1)
    """``max_tokens`` sent to Anthropic models when an OpenAI caller gives none (default 4096)."""


class OpenAIDeployment(_Strict):
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


class AnthropicDeployment(_Strict):
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


class LlamaCppDeployment(_Strict):
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


class OnnxEmbeddingsDeployment(_Strict):
    """The embedded all-MiniLM-L6-v2 embedding model (ONNX int8, 384 dimensions)."""

    provider: Literal["onnx-embeddings"]


class FakeDeployment(_Strict):
    """A scripted provider for tests; its ``model`` name chooses the behaviour."""

    provider: Literal["fake"]
    model: str = "echo"
    protocol: Literal["openai", "anthropic"] = "openai"


Deployment = Annotated[
    OpenAIDeployment | AnthropicDeployment | LlamaCppDeployment | OnnxEmbeddingsDeployment | FakeDeployment,
    Field(discriminator="provider"),
]


class ModelConfig(_Strict):
    """A name clients send, served by one or more deployments (the first is used)."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    """Other names that reach the same deployments."""
    deployments: list[Deployment] = Field(min_length=1)

    @field_validator("name", "aliases")
    @classmethod
    def _names(cls, value: str | list[str]) -> str | list[str]:
        for name in [value] if isinstance(value, str) else value:
            if not _MODEL_NAME.match(name):
                raise ValueError(
                    f"model name {name!r} must be 1-128 characters of letters, digits and ._:/@+-"
                )
        return value


class GatewayConfig(_Strict):
    """The whole file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    embedded_models: bool = True
    """Add the embedded chat model (``local``) and embedding model (``all-MiniLM-L6-v2``) unless a
    model of that name is configured (default true)."""
    cloud_models_from_env: bool = True
    """Add OpenAI / Anthropic models when OPENAI_API_KEY / ANTHROPIC_API_KEY are set (default true)."""
    default_model: str | None = None
    """The model ``modelyard chat`` talks to by default (default: ``local`` if served, else the first).
    Requests always name their model; an unknown name gets a 404 listing the served ones."""

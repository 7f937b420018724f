"""An OpenAPI 3.1 description of the gateway's public inference endpoints (``GET /openapi.json``).

It describes what modelyard itself checks and answers — the fields it relies on, and the two
error shapes (OpenAI's ``{"error": {...}}`` on OpenAI routes, Anthropic's ``{"type": "error"}`` on
Anthropic routes) — not every field of the vendors' APIs: unknown fields pass through to the
upstream, so request bodies allow additional properties. ``model`` lists the models this gateway
serves (from its configuration), so a generated request can reach a real deployment.

Other routes add themselves with :func:`add_operation`; the document is built once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard import __version__

if TYPE_CHECKING:
    from modelyard.providers.registry import Registry

__all__ = [
    "ANTHROPIC_ERROR",
    "OPENAI_ERROR",
    "Limits",
    "add_operation",
    "gateway_document",
    "openapi_document",
]

JSON = dict[str, Any]

OPENAI_ERROR: JSON = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ANTHROPIC_ERROR: JSON = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": "string"},
    },
}
_ERROR_STATUSES = ("400", "401", "403", "404", "405", "413", "422", "429", "500", "502", "503", "504")


def _errors(dialect: str) -> JSON:
    ref = {"$ref": f"#/components/schemas/{'Anthropic' if dialect == 'anthropic' else 'OpenAI'}Error"}
    return {
        status: {"description": f"error ({status})", "content": {"application/json": {"schema": ref}}}
        for status in _ERROR_STATUSES
    }


def _model(models: Sequence[str]) -> JSON:
    schema: JSON = {"type": "string", "minLength": 1, "description": "A model this gateway serves."}
    if models:
        schema["enum"] = list(models)
    return schema


@dataclass(frozen=True, slots=True)
class Limits:
    """The server limits the document states (``server.max_messages``, ``max_output_tokens``)."""

    max_messages: int = 2048
    max_output_tokens: int = 1_000_000


_TEXT = {"type": "string", "minLength": 1}


def _openai_chat(models: Sequence[str], limits: Limits) -> JSON:
    part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": _TEXT},
    }
    content = {"anyOf": [_TEXT, {"type": "array", "items": part, "minItems": 1}]}
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": ["system", "developer", "user", "assistant"]}, "content": content},
    }
    tokens = {"type": "integer", "minimum": 1, "maximum": limits.max_output_tokens}
    return {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": _model(models),
            "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": limits.max_messages},
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 1},
            "stream": {"type": "boolean"},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "user": {"type": "string"},
        },
    }


def _anthropic_messages(models: Sequence[str], limits: Limits, *, count_only: bool = False) -> JSON:
    text_block = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": _TEXT, "cache_control": {"type": "object"}},
    }
    tool_use = {
        "type": "object",
        "required": ["type", "id", "name", "input"],
        "properties": {
            "type": {"const": "tool_use"},
            "id": _TEXT,
            "name": _TEXT,
            "input": {"type": "object"},
        },
    }
    tool_result = {
        "type": "object",
        "required": ["type", "tool_use_id"],
        "properties": {"type": {"const": "tool_result"}, "tool_use_id": _TEXT, "content": {"type": "string"}},
    }
    block = {"oneOf": [text_block, tool_use, tool_result]}
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["user", "assistant"]},
            "content": {"anyOf": [_TEXT, {"type": "array", "items": block, "minItems": 1}]},
        },
    }
    tool = {
        "type": "object",
        "required": ["name", "input_schema"],
        "properties": {
            "name": _TEXT,
            "description": {"type": "string"},
            "input_schema": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"const": "object"}},
            },
        },
    }
    properties: JSON = {
        "model": _model(models),
        "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": limits.max_messages},
        "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": text_block}]},
        "tools": {"type": "array", "items": tool},
    }
    required = ["model", "messages"]
    if not count_only:
        properties |= {
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": limits.max_output_tokens},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "stream": {"type": "boolean"},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object"},
        }
        required.append("max_tokens")
    return {"type": "object", "required": required, "properties": properties}


def _embeddings(models: Sequence[str]) -> JSON:
    return {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": _model(models),
            "input": {"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 64}]},
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
        },
    }


def _post(summary: str, dialect: str, body: JSON, ok: JSON, *, streams: bool = False) -> JSON:
    content: JSON = {"application/json": {"schema": ok}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": {"description": "the answer", "content": content}, **_errors(dialect)},
        }
    }


def openapi_document(
    chat_models: Sequence[str] = (), embedding_models: Sequence[str] = (), limits: Limits | None = None
) -> JSON:
    """The OpenAPI 3.1 document; ``*_models``: the served names (empty: any string)."""
    limits = limits or Limits()
    obj = {"type": "object"}
    paths: JSON = {
        "/v1/chat/completions": _post(
            "OpenAI Chat Completions", "openai", _openai_chat(chat_models, limits), obj, streams=True
        ),
        "/v1/messages": _post(
            "Anthropic Messages", "anthropic", _anthropic_messages(chat_models, limits), obj, streams=True
        ),
        "/v1/messages/count_tokens": _post(
            "Anthropic token counting",
            "anthropic",
            _anthropic_messages(chat_models, limits, count_only=True),
            {
                "type": "object",
                "required": ["input_tokens"],
                "properties": {"input_tokens": {"type": "integer"}},
            },
        ),
        "/v1/embeddings": _post("OpenAI embeddings", "openai", _embeddings(embedding_models), obj),
        "/v1/models": {
            "get": {
                "summary": "The models this gateway serves",
                "responses": {
                    "200": {
                        "description": "the model list",
                        "content": {"application/json": {"schema": {"type": "object", "required": ["data"]}}},
                    },
                    **_errors("openai"),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelyard gateway",
            "version": __version__,
            "description": "OpenAI- and Anthropic-compatible inference endpoints of a modelyard gateway.",
        },
        "paths": paths,
        "components": {
            "schemas": {"OpenAIError": OPENAI_ERROR, "AnthropicError": ANTHROPIC_ERROR},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"x-api-key": []}],
    }


def gateway_document(registry: Registry, limits: Limits | None = None) -> JSON:
    """The document for a running gateway: ``model`` enumerates what its registry serves."""
    chat: list[str] = []
    embed: list[str] = []
    for model in registry.models:
        targets = registry.targets(model.name)
        names = (model.name, *model.aliases)
        if any(t.chat for t in targets):
            chat += names
        if any(t.embeddings for t in targets):
            embed += names
    return openapi_document(chat, embed, limits)


def add_operation(document: JSON, path: str, method: str, operation: JSON) -> None:
    """Add one more documented operation (for routes other modules serve)."""
    document["paths"].setdefault(path, {})[method.lower()] = operation

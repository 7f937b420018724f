"""A scripted provider for tests and demos; the model name chooses the behaviour.

=====================  =========================================================================
``echo`` (default)     answers ``echo: <last user text>``, streamed word by word
``tool-call``          calls every tool offered (parallel calls), arguments from the schema
``json``               answers ``{"ok": true}``
``error-<status>``     fails with that upstream HTTP status (``error-429``, ``error-503``)
``slow-<ms>``          waits ``ms`` milliseconds, then echoes
``stream-cut-<n>``     streams ``n`` text chunks, then the connection drops
``drip-<ms>``          echoes, streaming one chunk every ``ms`` milliseconds
=====================  =========================================================================

It speaks OpenAI or Anthropic wire format, chosen by ``protocol``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelyard.errors import UpstreamConnectionError, UpstreamError
from modelyard.providers.base import CallContext, EmbeddingResult, JSONDict, Provider, SSEEvent, WireProtocol


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _args_for(schema: Any) -> JSONDict:
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    out: JSONDict = {}
    for name, spec in props.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        out[name] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(
            str(kind), "test"
        )
    return out


class FakeProvider(Provider):
    name = "fake"

    def __init__(self, *, protocol: WireProtocol = WireProtocol.OPENAI) -> None:
        self.protocol = protocol

    # -- behaviour ------------------------------------------------------------------------------
    async def _script(self, body: JSONDict) -> tuple[str, list[tuple[str, str, JSONDict]], str]:
        """(text, tool calls as (id, name, args), behaviour) for a request."""
        model = str(body.get("model", "echo"))
        if model.startswith("error-"):
            status = int(model.removeprefix("error-") or 500)
            raise UpstreamError(
                f"fake upstream error ({status})",
                status=status,
                provider=self.name,
                model=model,
                headers={"retry-after": "1"} if status == 429 else None,
            )
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.removeprefix("slow-")) / 1000)
        messages = body.get("messages") or []
        last_user: JSONDict = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = "echo: " + _text_of(last_user.get("content"))
        calls: list[tuple[str, str, JSONDict]] = []
        if model == "tool-call":
            for i, tool in enumerate(body.get("tools") or []):
                fn = tool.get("function", tool)
                schema = fn.get("parameters", fn.get("input_schema", {}))
                calls.append((f"call_fake{i}", str(fn.get("name")), _args_for(schema)))
            text = ""
        elif model == "json":
            text = '{"ok": true}'
        return text, calls, model

    @staticmethod
    def _tokens(text: str) -> int:
        return max(1, len(text.split()))

    def _prompt_tokens(self, body: JSONDict) -> int:
        return sum(self._tokens(_text_of(m.get("content"))) for m in body.get("messages") or [])

    # -- non-streaming ----------------------------------------------------------------------------
    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        text, calls, model = await self._script(body)
        prompt, completion = self._prompt_tokens(body), self._tokens(text) + len(calls)
        if self.protocol is WireProtocol.ANTHROPIC:
            content: list[JSONDict] = [{"type": "text", "text": text}] if text else []
            content += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
            return {
                "id": "msg_fake" + ctx.request_id[-12:],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if calls else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }
        message: JSONDict = {"role": "assistant", "content": text or None, "refusal": None}
        if calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
                for i, n, a in calls
            ]
        return {
            "id": "chatcmpl-fake" + ctx.request_id[-12:],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    # -- streaming ----------------------------------------------------------------------------------
    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        text, calls, model = await self._script(body)
        words = [w + " " for w in text.split(" ")] if text else []
        if words:
            words[-1] = words[-1][:-1]
        cut = int(model.removeprefix("stream-cut-")) if model.startswith("stream-cut-") else None
        drip = int(model.removeprefix("drip-")) / 1000 if model.startswith("drip-") else 0.0
        events = (
            self._anthropic_events(body, words, calls, model)
            if self.protocol is WireProtocol.ANTHROPIC
            else self._openai_events(body, words, calls, model, ctx)
        )
        for n, event in enumerate(events):
            if cut is not None and n > cut:
                raise UpstreamConnectionError(
                    "fake upstream dropped the stream", provider=self.name, model=model
                )
            await asyncio.sleep(drip)
            yield event

    def _openai_events(
        self,
        body: JSONDict,
        words: list[str],
        calls: list[tuple[str, str, JSONDict]],
        model: str,
        ctx: CallContext,
    ) -> list[SSEEvent]:
        base = {
            "id": "chatcmpl-fake" + ctx.request_id[-12:],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: JSONDict, finish: str | None = None) -> SSEEvent:
            data = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                data["usage"] = None
            return SSEEvent(orjson.dumps(data))

        out = [chunk({"role": "assistant", "content": "", "refusal": None})]
        out += [chunk({"content": w}) for w in words]
        for idx, (cid, name, args) in enumerate(calls):
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": idx,
                                "id": cid,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            raw = orjson.dumps(args).decode()
            half = len(raw) // 2
            for part in (raw[:half], raw[half:]):
                out.append(chunk({"tool_calls": [{"index": idx, "function": {"arguments": part}}]}))
        out.append(chunk({}, "tool_calls" if calls else "stop"))
        if include_usage:
            prompt, completion = self._prompt_tokens(body), max(1, len(words)) + len(calls)
            out.append(
                SSEEvent(
                    orjson.dumps(
                        {
                            **base,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt,
                                "completion_tokens": completion,
                                "total_tokens": prompt + completion,
                            },
                        }
                    )
                )
            )
        out.append(SSEEvent(b"[DONE]"))
        return out

    def _anthropic_events(
        self, body: JSONDict, words: list[str], calls: list[tuple[str, str, JSONDict]], model: str
    ) -> list[SSEEvent]:
        def ev(kind: str, **data: Any) -> SSEEvent:
            return SSEEvent(orjson.dumps({"type": kind, **data}), kind)

        prompt = self._prompt_tokens(body)
        out = [
            ev(
                "message_start",
                message={
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": 1},
                },
            ),
            ev("ping"),
        ]
        index = 0
        if words:
            out.append(ev("content_block_start", index=0, content_block={"type": "text", "text": ""}))
            out += [
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": w}) for w in words
            ]
            out.append(ev("content_block_stop", index=0))
            index = 1
        for cid, name, args in calls:
            out.append(
                ev(
                    "content_block_start",
                    index=index,
                    content_block={"type": "tool_use", "id": cid, "name": name, "input": {}},
                )
            )
            raw = orjson.dumps(args).decode()
            half = len(raw) // 2
            for part in (raw[:half], raw[half:]):
                out.append(
                    ev(
                        "content_block_delta",
                        index=index,
                        delta={"type": "input_json_delta", "partial_json": part},
                    )
                )
            out.append(ev("content_block_stop", index=index))
            index += 1
        out.append(
            ev(
                "message_delta",
                delta={"stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None},
                usage={"output_tokens": max(1, len(words)) + len(calls)},
            )
        )
        out.append(ev("message_stop"))
        return out

    async def embed(self, inputs: list[str], model: str, ctx: CallContext) -> EmbeddingResult:
        vectors = [[float(len(text) % 7), 1.0, 0.5] for text in inputs]
        return EmbeddingResult(vectors, sum(self._tokens(t) for t in inputs))

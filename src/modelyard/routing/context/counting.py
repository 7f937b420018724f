"""Token counts of whole requests: text through a tokenizer, plus each format's overheads.

OpenAI chat (the cookbook's rule, exact for cl100k models): 3 tokens per message plus its role's
tokens, 1 more for a ``name``, 3 to prime the reply; tool definitions are counted as their JSON
plus 8 per tool (the model sees them rendered as a TypeScript-like namespace, a little shorter);
an image part is 765 tokens (a 1024×1024 image at high detail; ``detail: low`` is 85).

Anthropic (an estimate: the tokenizer is not public): 4 tokens per message, 346 for the tool-use
system prompt when tools are given (Anthropic's documented figure), an image 1,600 tokens (the
largest image Anthropic bills without resizing, about 1.15 megapixels).

A GGUF model counts exactly: the request is mapped the way the llama.cpp provider maps it and
rendered through the file's chat template (:meth:`GGUFTokenizer.count_chat`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from modelyard.providers.base import JSONDict, WireProtocol
from modelyard.routing.context.tokenizers import GGUFTokenizer, TextTokenizer

__all__ = ["ANTHROPIC_FORMAT", "OPENAI_FORMAT", "Formatting", "TokenCounter", "message_text"]


@dataclass(frozen=True, slots=True)
class Formatting:
    """Tokens a vendor's prompt format adds around the text."""

    per_message: int
    per_name: int
    per_request: int
    per_tool: int
    tools_base: int
    image: int
    image_low: int


OPENAI_FORMAT = Formatting(
    per_message=3, per_name=1, per_request=3, per_tool=8, tools_base=0, image=765, image_low=85
)
ANTHROPIC_FORMAT = Formatting(
    per_message=4, per_name=0, per_request=3, per_tool=8, tools_base=346, image=1600, image_low=1600
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def message_text(content: Any) -> tuple[list[str], int, int]:
    """(text pieces, high-detail images, low-detail images) of a message content of either protocol."""
    if content is None:
        return [], 0, 0
    if isinstance(content, str):
        return [content], 0, 0
    pieces: list[str] = []
    images = low = 0
    stack: list[Any] = list(reversed(content)) if isinstance(content, list) else [content]
    while stack:
        block = stack.pop()
        if isinstance(block, str):
            pieces.append(block)
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("image_url", "image", "input_image"):
            detail = (
                (block.get("image_url") or {}).get("detail") if kind == "image_url" else block.get("detail")
            )
            if detail == "low":
                low += 1
            else:
                images += 1
        elif kind == "tool_use":
            pieces += [str(block.get("name", "")), _dumps(block.get("input", {}))]
        elif kind == "tool_result":
            inner = block.get("content")
            if isinstance(inner, list):
                stack.extend(reversed(inner))
            elif inner is not None:
                pieces.append(str(inner))
        elif kind == "thinking":
            pieces.append(str(block.get("thinking", "")))
        elif isinstance(block.get("text"), str):
            pieces.append(block["text"])
        elif kind in ("document", "file", "input_file"):
            pieces.append(_dumps(block))
    return pieces, images, low


class TokenCounter:
    """Counts requests of either protocol for one target model."""

    def __init__(self, tokenizer: TextTokenizer, formatting: Formatting) -> None:
        self.tokenizer = tokenizer
        self.formatting = formatting

    @property
    def name(self) -> str:
        return self.tokenizer.name

    @property
    def exact(self) -> bool:
        return self.tokenizer.exact

    def text(self, text: str) -> int:
        return self.tokenizer.count(text)

    def _content(self, content: Any) -> int:
        pieces, images, low = message_text(content)
        fmt = self.formatting
        return sum(self.tokenizer.count(p) for p in pieces) + images * fmt.image + low * fmt.image_low

    def message(self, message: JSONDict) -> int:
        """One message of either protocol, with its overhead."""
        fmt = self.formatting
        total = fmt.per_message + self._content(message.get("content"))
        role = message.get("role")
        if isinstance(role, str):
            total += self.tokenizer.count(role)  # the cookbook counts the role's own tokens
        if message.get("name"):
            total += fmt.per_name + self.tokenizer.count(str(message["name"]))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += self.tokenizer.count(str(fn.get("name", ""))) + self.tokenizer.count(
                    str(fn.get("arguments", ""))
                )
        if message.get("tool_call_id"):
            total += 1
        return total

    def tools(self, tools: Iterable[Any]) -> int:
        listed = list(tools)
        if not listed:
            return 0
        fmt = self.formatting
        return fmt.tools_base + sum(fmt.per_tool + self.tokenizer.count(_dumps(t)) for t in listed)

    def system(self, body: JSONDict, protocol: WireProtocol) -> int:
        """Anthropic's top-level system prompt (OpenAI keeps it among the messages)."""
        if protocol is WireProtocol.ANTHROPIC and body.get("system"):
            return self.formatting.per_message + self._content(body["system"])
        return 0

    def request(self, body: JSONDict, protocol: WireProtocol) -> int:
        """Input tokens of a whole request body in the ``protocol`` it is written in."""
        messages = body.get("messages") or []
        total = self.formatting.per_request + self.system(body, protocol)
        total += sum(self.message(m) for m in messages if isinstance(m, dict))
        total += self.tools(body.get("tools") or ())
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            total += self.tokenizer.count(_dumps(fmt.get("json_schema")))
        return total


class GGUFCounter(TokenCounter):
    """Exact counts for a GGUF chat model: the request goes through the chat template."""

    def __init__(self, tokenizer: GGUFTokenizer) -> None:
        # Per-message sums (used to choose what to trim) use the template's own framing cost,
        # measured once: one more message minus its text and role tokens.
        one = [{"role": "user", "content": "hello"}]
        two = [*one, {"role": "assistant", "content": "world"}]
        framing = tokenizer.count_chat(two) - tokenizer.count_chat(one)
        framing -= tokenizer.count("world") + tokenizer.count("assistant")
        super().__init__(
            tokenizer, replace(OPENAI_FORMAT, per_message=max(OPENAI_FORMAT.per_message, framing))
        )
        self.gguf = tokenizer

    def request(self, body: JSONDict, protocol: WireProtocol) -> int:
        from modelyard.providers._llamacpp_mapping import (
            _forced_tools,
            _normalize_messages,
            _with_system_note,
        )
        from modelyard.translate import anthropic_request_to_openai

        openai_body = (
            anthropic_request_to_openai({**body, "max_tokens": 1})
            if protocol is WireProtocol.ANTHROPIC
            else body
        )
        _names, instruction, _grammar = _forced_tools(openai_body)
        messages = _normalize_messages(openai_body.get("messages"), self.gguf.template_supports_tools)
        if instruction:
            messages = _with_system_note(messages, instruction)
        return self.gguf.count_chat(messages)

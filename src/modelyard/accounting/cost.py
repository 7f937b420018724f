"""A request's cost: the actual cost after the call, and the maximum cost reserved at admission.

Token kinds follow Anthropic's usage block, where they do not overlap:

* ``tokens_in``: input tokens billed at the full input rate (*uncached*). OpenAI's
  ``prompt_tokens`` *includes* its ``prompt_tokens_details.cached_tokens``: pass
  ``prompt_tokens - cached_tokens`` here, or use :func:`usage_from_openai`.
* ``tokens_out``: output tokens, reasoning / thinking tokens included.
* ``cache_read``: input tokens read from the prompt cache.
* ``cache_write``: input tokens written to the prompt cache (Anthropic, 5-minute TTL);
  ``cache_write_1h`` those written with the 1-hour TTL.

:func:`request_cost` sums exact pico-dollar products and rounds **once, up**, to nano-dollars.

Admission (RELIABILITY.md §5): *max cost* = prompt rate × ``prompt_upper_tokens`` + output rate ×
``max_tokens``, where ``prompt_upper_tokens`` counts every UTF-8 byte of what the model reads plus
a per-message overhead — a token is at least one byte, so no tokenizer can produce more tokens
than that. Two refinements keep the bound true for every outcome: the prompt rate is the
*dearest* input-side rate (an Anthropic cache write costs 1.25–2 × input), and the long-context
tier is used when the upper bound crosses its threshold. Hence, for any usage whose prompt tokens
(uncached + cache reads + writes) ≤ ``prompt_upper_tokens`` and output ≤ ``max_tokens``,
``request_cost(...) ≤ max_cost(...)``.

What the byte bound cannot see, and how it is handled:

* **Images** are not billed by their bytes: each image part counts :data:`IMAGE_TOKENS_UPPER`
  tokens. OpenAI's patch-based models cap an image at 1,536 patches × a model multiplier
  (≤ 2.46 for gpt-4.1-nano: 3,779 tokens); tile-based models stay under 1,900 for any size
  they accept at ``detail: high``; Anthropic bills ≤ ~1,600 for an image it does not downscale
  further. 4,096 covers each of them.
* **Documents and audio** (Anthropic ``document``, OpenAI ``file`` / ``input_audio``) count the
  bytes of their encoded data. That is a heuristic, not a strict bound: a compressed PDF can yield
  more text tokens than its size in bytes. A file referenced by id (``file_id``) is not in the
  body at all and cannot be bounded here.
* **Tools**: the schemas' bytes are counted, plus :data:`TOOLS_OVERHEAD_TOKENS` for the system
  prompt that vendors add when tools are present (Anthropic documents 313–346 tokens).
* Per-call fees of server-side tools (web search) and OpenAI's rejected prediction tokens are not
  token costs of the prompt and are not bounded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.accounting.catalog import ModelPrice
from modelyard.accounting.money import pico_to_nano_ceil

__all__ = [
    "IMAGE_TOKENS_UPPER",
    "PER_MESSAGE_OVERHEAD_TOKENS",
    "PER_REQUEST_OVERHEAD_TOKENS",
    "TOOLS_OVERHEAD_TOKENS",
    "TokenUsage",
    "cost_of_usage",
    "max_cost",
    "prompt_upper_tokens",
    "request_cost",
    "requested_max_tokens",
    "usage_from_anthropic",
    "usage_from_openai",
]

Protocol = Literal["openai", "anthropic"]

PER_MESSAGE_OVERHEAD_TOKENS = 8
"""Role and separator tokens a chat template adds around each message (OpenAI documents 3-4)."""
PER_REQUEST_OVERHEAD_TOKENS = 16
"""Tokens added once per request (reply priming, BOS, default system preamble)."""
TOOLS_OVERHEAD_TOKENS = 512
"""Tokens of the hidden tool-use system prompt added when a request declares tools."""
IMAGE_TOKENS_UPPER = 4096
"""Tokens counted for one image part, whatever its size (see the module docstring)."""

# Fields of a request body that the model reads. Everything else (model, temperature, stream,
# metadata, user ...) is not prompt text.
_PROMPT_FIELDS = (
    "system",
    "messages",
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "response_format",
    "instructions",
    "input",
    "prompt",
)
_TOOL_FIELDS = ("tools", "functions")
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_SCALAR_BYTES = 8  # a number, true/false/null: at most this many bytes as text, generously


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """One attempt's tokens, in the non-overlapping kinds of the module docstring."""

    tokens_in: int = 0
    """Uncached input tokens."""
    tokens_out: int = 0
    """Output tokens (reasoning included)."""
    cache_read: int = 0
    """Input tokens read from the prompt cache."""
    cache_write: int = 0
    """Input tokens written to the prompt cache (5-minute TTL)."""
    cache_write_1h: int = 0
    """Input tokens written to the prompt cache with the 1-hour TTL."""

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not."""
        return self.tokens_in + self.cache_read + self.cache_write + self.cache_write_1h


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_openai(usage: Mapping[str, Any] | None) -> TokenUsage:
    """An OpenAI ``usage`` object (chat completions or responses) as :class:`TokenUsage`."""
    if not usage:
        return TokenUsage()
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = min(_int(details.get("cached_tokens")), prompt)
    output = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    return TokenUsage(tokens_in=prompt - cached, tokens_out=output, cache_read=cached)


def usage_from_anthropic(usage: Mapping[str, Any] | None) -> TokenUsage:
    """An Anthropic ``usage`` object as :class:`TokenUsage` (1-hour writes split out when given)."""
    if not usage:
        return TokenUsage()
    writes = _int(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation") or {}
    writes_1h = min(_int(split.get("ephemeral_1h_input_tokens")), writes)
    return TokenUsage(
        tokens_in=_int(usage.get("input_tokens")),
        tokens_out=_int(usage.get("output_tokens")),
        cache_read=_int(usage.get("cache_read_input_tokens")),
        cache_write=writes - writes_1h,
        cache_write_1h=writes_1h,
    )


def request_cost(
    price: ModelPrice,
    tokens_in: int,
    tokens_out: int,
    cache_read: int = 0,
    cache_write: int = 0,
    *,
    cache_write_1h: int = 0,
) -> int:
    """The cost of one attempt in nano-dollars: exact pico-dollar sum, rounded up once."""
    rates = price.for_prompt(tokens_in + cache_read + cache_write + cache_write_1h)
    pico = (
        rates.input.pico_for(tokens_in)
        + rates.output.pico_for(tokens_out)
        + rates.cache_read.pico_for(cache_read)
        + rates.cache_write.pico_for(cache_write)
        + rates.cache_write_1h.pico_for(cache_write_1h)
    )
    return pico_to_nano_ceil(pico)


def cost_of_usage(price: ModelPrice, usage: TokenUsage) -> int:
    """:func:`request_cost` of a :class:`TokenUsage`."""
    return request_cost(
        price,
        usage.tokens_in,
        usage.tokens_out,
        usage.cache_read,
        usage.cache_write,
        cache_write_1h=usage.cache_write_1h,
    )


def max_cost(price: ModelPrice, prompt_upper_tokens: int, max_tokens: int) -> int:
    """The most a request can cost, in nano-dollars: what admission reserves.

    ``prompt_upper_tokens`` from :func:`prompt_upper_tokens`; ``max_tokens`` the output cap the
    upstream enforces (the request's, or the key's / server's default when it gives none).
    """
    if prompt_upper_tokens < 0 or max_tokens < 0:
        raise ValueError("token counts cannot be negative")
    candidates = [price]
    tier = price.for_prompt(prompt_upper_tokens)
    if tier is not price:
        candidates.append(tier)
    pico = max(
        rates.max_prompt_rate.pico_for(prompt_upper_tokens) + rates.output.pico_for(max_tokens)
        for rates in candidates
    )
    return pico_to_nano_ceil(pico)


def requested_max_tokens(body: Mapping[str, Any], protocol: Protocol, default: int) -> int:
    """The output cap a request asks for, else ``default``.

    OpenAI: ``max_completion_tokens``, then ``max_tokens``; Anthropic: ``max_tokens``; either:
    ``max_output_tokens`` (Responses API). Capping it by a key's limit is the caller's business.
    """
    keys = ("max_tokens",) if protocol == "anthropic" else ("max_completion_tokens", "max_tokens")
    for key in (*keys, "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


def prompt_upper_tokens(body: Mapping[str, Any], protocol: Protocol) -> int:
    """An upper bound on the input tokens of an OpenAI- or Anthropic-format request body.

    UTF-8 bytes of every string the model reads (system, messages, tool calls and results, tool
    schemas, response format; JSON keys included), plus :data:`PER_MESSAGE_OVERHEAD_TOKENS` per
    message, :data:`PER_REQUEST_OVERHEAD_TOKENS`, :data:`TOOLS_OVERHEAD_TOKENS` when tools are
    declared, and :data:`IMAGE_TOKENS_UPPER` per image. ``protocol`` only changes how messages
    are counted (Anthropic's top-level ``system`` is one more message).
    """
    total = PER_REQUEST_OVERHEAD_TOKENS
    for field_name in _PROMPT_FIELDS:
        if field_name in body:
            total += _upper(body[field_name])
    messages = body.get("messages")
    if isinstance(messages, list):
        total += PER_MESSAGE_OVERHEAD_TOKENS * len(messages)
    if protocol == "anthropic" and body.get("system"):
        total += PER_MESSAGE_OVERHEAD_TOKENS
    if any(body.get(name) for name in _TOOL_FIELDS):
        total += TOOLS_OVERHEAD_TOKENS
    return total


def _upper(value: Any) -> int:
    """Byte-bound token count of one JSON value (iterative: deep bodies cannot overflow the stack)."""
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, Mapping):
            if item.get("type") in _IMAGE_TYPES:
                total += IMAGE_TOKENS_UPPER
                continue
            for key, child in item.items():
                total += len(str(key).encode("utf-8", "surrogatepass"))
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            total += _SCALAR_BYTES
    return total

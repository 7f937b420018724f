"""Pure fitting steps on a request body of either protocol: turns, trimming, tool-output
compression, and placing a summary. No I/O; the counter does the measuring.

A *turn* starts at a user message that carries the user's words (not only tool results) and runs
until the next such message; an assistant's tool calls and their results always share a turn, so
trimming whole turns never separates a tool call from its result. System prompts (OpenAI
``system`` / ``developer`` messages, Anthropic's top-level ``system``) and tool definitions are
never trimmed, and neither is the last turn (which holds the last user message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict, WireProtocol
from modelyard.routing.context.counting import TokenCounter

__all__ = [
    "SUMMARY_PREFIX",
    "TrimPlan",
    "compress_tool_outputs",
    "plan_trim",
    "split_turns",
    "too_long_error",
    "with_messages",
    "with_summary",
]

SUMMARY_PREFIX = "Summary of the earlier conversation (older turns were folded by the gateway):\n"
_SYSTEM_ROLES = ("system", "developer")


def _is_user_turn(message: Any) -> bool:
    if not isinstance(message, dict) or message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, list) and content:
        return not all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    return True


def split_turns(messages: list[Any]) -> tuple[list[int], list[list[int]]]:
    """(indices of system messages, turns as lists of message indices, oldest first)."""
    system: list[int] = []
    turns: list[list[int]] = []
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") in _SYSTEM_ROLES:
            system.append(i)
            continue
        if not turns or _is_user_turn(message):
            turns.append([i])
        else:
            turns[-1].append(i)
    return system, turns


def with_messages(body: JSONDict, messages: list[Any]) -> JSONDict:
    out = dict(body)
    out["messages"] = messages
    return out


@dataclass(frozen=True, slots=True)
class TrimPlan:
    body: JSONDict
    dropped: int
    """Messages removed."""
    dropped_turns: int
    prompt_tokens: int


def too_long_error(prompt: int, reserve: int, window: int, where: str, hint: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"this request does not fit the context window of {where}: the prompt is {prompt} tokens "
        f"and {reserve} are reserved for the answer (max_tokens, or the default reserve), "
        f"{prompt + reserve} in all, but the window is {window} tokens. {hint}",
        param="messages",
        code="context_length_exceeded",
    )


def plan_trim(
    body: JSONDict,
    protocol: WireProtocol,
    counter: TokenCounter,
    budget: int,
    *,
    keep_share: float = 1.0,
    step: int = 1,
) -> TrimPlan | None:
    """Drop the oldest whole turns until the prompt is at most ``budget`` tokens.

    With ``keep_share`` < 1 the kept older turns fill at most that share of the room left after
    the fixed part (system, tools, last turn), leaving headroom for the next turns. With ``step``
    > 1 the number of dropped turns is rounded up to a multiple of ``step``: as the conversation
    grows by a turn at a time, the first kept turn stays the same for several turns, so the
    prompt's start is stable and prefix caches (llama.cpp's KV cache, vendors' prompt caches)
    are reused. None when even the fixed part does not fit.
    """
    messages: list[Any] = list(body.get("messages") or [])
    system, turns = split_turns(messages)
    if not turns:
        return None
    last = turns[-1]
    keep = set(system) | set(last)

    def build(kept: set[int]) -> JSONDict:
        return with_messages(body, [m for i, m in enumerate(messages) if i in kept])

    fixed = counter.request(build(keep), protocol)
    if fixed > budget:
        return None
    room = int((budget - fixed) * keep_share)
    older = turns[:-1]
    kept_turns: list[list[int]] = []
    used = 0
    for turn in reversed(older):
        cost = sum(counter.message(messages[i]) for i in turn)
        if used + cost > room:
            break
        used += cost
        kept_turns.append(turn)
    if step > 1 and kept_turns:
        dropped = len(older) - len(kept_turns)
        rounded = min(len(older), -(-dropped // step) * step)
        kept_turns = kept_turns[: len(older) - rounded]
    # Per-message sums are close to, not always equal to, the exact count: check, drop more if needed.
    while True:
        kept = keep | {i for turn in kept_turns for i in turn}
        candidate = build(kept)
        tokens = counter.request(candidate, protocol)
        if tokens <= budget or not kept_turns:
            break
        kept_turns.pop()
    if tokens > budget:
        return None
    return TrimPlan(candidate, len(messages) - len(kept), len(older) - len(kept_turns), tokens)


def with_summary(body: JSONDict, protocol: WireProtocol, summary: str, first_kept: int) -> JSONDict:
    """``body`` with messages before ``first_kept`` (system messages excepted) replaced by a summary:
    an OpenAI system message after the leading system messages, or Anthropic system text."""
    messages: list[Any] = list(body.get("messages") or [])
    text = SUMMARY_PREFIX + summary.strip()
    kept = [
        m
        for i, m in enumerate(messages)
        if i >= first_kept or (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES)
    ]
    out = dict(body)
    if protocol is WireProtocol.ANTHROPIC:
        system = body.get("system")
        if isinstance(system, list):
            out["system"] = [*system, {"type": "text", "text": text}]
        elif isinstance(system, str) and system:
            out["system"] = system + "\n\n" + text
        else:
            out["system"] = text
        out["messages"] = kept
        return out
    lead = 0
    while lead < len(kept) and isinstance(kept[lead], dict) and kept[lead].get("role") in _SYSTEM_ROLES:
        lead += 1
    out["messages"] = [*kept[:lead], {"role": "system", "content": text}, *kept[lead:]]
    return out


def _cut_middle(text: str, tokens: int, limit: int, head_share: float) -> str:
    keep_chars = max(1, int(len(text) * limit / tokens))
    head = int(keep_chars * head_share)
    tail = keep_chars - head
    omitted = tokens - limit
    marker = f"\n[... about {omitted} tokens of tool output omitted by the gateway ...]\n"
    return text[:head] + marker + (text[len(text) - tail :] if tail else "")


def compress_tool_outputs(
    body: JSONDict, protocol: WireProtocol, counter: TokenCounter, limit: int, head_share: float
) -> tuple[JSONDict, int]:
    """Cut the middle of every tool result longer than ``limit`` tokens; (body, results cut)."""
    messages: list[Any] = list(body.get("messages") or [])
    cut = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if protocol is WireProtocol.OPENAI and message.get("role") == "tool":
            content = message.get("content")
            if isinstance(content, str):
                tokens = counter.text(content)
                if tokens > limit:
                    messages[i] = {**message, "content": _cut_middle(content, tokens, limit, head_share)}
                    cut += 1
        elif protocol is WireProtocol.ANTHROPIC and isinstance(message.get("content"), list):
            blocks = list(message["content"])
            changed = False
            for j, block in enumerate(blocks):
                if not isinstance(block, dict) or block.get("type") != "tool_result":
                    continue
                inner = block.get("content")
                if isinstance(inner, str):
                    tokens = counter.text(inner)
                    if tokens > limit:
                        blocks[j] = {**block, "content": _cut_middle(inner, tokens, limit, head_share)}
                        changed = True
                        cut += 1
                elif isinstance(inner, list):
                    parts = list(inner)
                    for k, part in enumerate(parts):
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            tokens = counter.text(part["text"])
                            if tokens > limit:
                                parts[k] = {
                                    **part,
                                    "text": _cut_middle(part["text"], tokens, limit, head_share),
                                }
                                changed = True
                                cut += 1
                    blocks[j] = {**block, "content": parts}
            if changed:
                messages[i] = {**message, "content": blocks}
    return (with_messages(body, messages) if cut else body), cut

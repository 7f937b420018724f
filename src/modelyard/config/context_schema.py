"""The ``context:`` section of a model: what happens when a conversation outgrows a model's window.

Example::

    models:
      - name: chat
        deployments: [{provider: llamacpp, n_ctx: 2048}]
        routing: {context_fallback: big}
        context:
          policy: summarize          # reject | fallback | trim | summarize
          reserve_tokens: 256        # room kept for the answer when max_tokens is not given
          tool_outputs: {max_tokens: 400}
          summarize: {model: local, max_summary_tokens: 200}

See docs/context.md for when to use each policy and what it risks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolOutputCompression(_Strict):
    """Long tool results lose their middle (replaced by a marker) before the policy applies."""

    max_tokens: int | None = Field(None, ge=16)
    """Longest tool result kept whole, in tokens; a longer one keeps its head and tail around a
    marker naming how many tokens were omitted (default: none, tool results are never cut).
    Applied only to requests that do not fit."""
    head_share: float = Field(0.5, ge=0, le=1)
    """Share of the kept tokens taken from the start of the result (default 0.5; the rest from the end)."""


class SummarizeConfig(_Strict):
    """How older turns are folded into a summary (policy ``summarize``)."""

    model: str = "local"
    """Model that writes the summaries (default ``local``, the embedded model). Its calls are
    admitted, billed and recorded as requests of their own (request id ``<id>-summary``)."""
    max_summary_tokens: int = Field(256, ge=16, le=4096)
    """Longest summary, tokens (default 256); this much room is kept for it in the window."""
    keep_recent_share: float = Field(0.5, gt=0, le=1)
    """When folding, the latest turns kept verbatim fill at most this share of the room left for
    messages (default 0.5), so that the next turns fit without a new summary."""
    cache_entries: int = Field(1024, ge=1)
    """Summaries kept in memory, by conversation-prefix hash (default 1,024; least recently used
    are dropped)."""
    timeout_s: float = Field(60.0, gt=0)
    """Longest wait for a summary before falling back to trim (default 60 s)."""


class ContextConfig(_Strict):
    """Fitting a request into the window of the deployment that will serve it."""

    policy: Literal["reject", "fallback", "trim", "summarize"] = "reject"
    """What to do with a request whose prompt plus reserved answer does not fit: ``reject`` (400
    naming the sizes, default), ``fallback`` (a larger-context model: ``fallback_models``, else
    ``routing.context_fallback`` then ``routing.fallbacks``), ``trim`` (drop the oldest turns, keep
    the system prompt, tools and the latest turns) or ``summarize`` (fold older turns into a
    summary written by ``summarize.model``; trim if that fails)."""
    reserve_tokens: int | None = Field(None, ge=1)
    """Room kept for the answer when the request gives no ``max_tokens`` / ``max_completion_tokens``
    (default: 1/8 of the window, at most 1,024). A requested cap is reserved up to half the window."""
    fallback_models: list[str] = Field(default_factory=list)
    """Larger-context models for ``fallback``, tried in order (default: ``routing.context_fallback``,
    then ``routing.fallbacks``). The first whose window holds the request serves it."""
    trim_step_turns: int = Field(4, ge=1)
    """``trim`` drops the oldest turns in steps of this many (default 4), not one at a time, so
    the start of the prompt stays the same for several turns and prefix caches are reused: a
    local model's KV cache (otherwise the whole prompt is evaluated again every turn) and the
    vendors' prompt caches. 1: keep as many turns as fit."""
    tool_outputs: ToolOutputCompression = Field(default_factory=ToolOutputCompression)
    summarize: SummarizeConfig = Field(default_factory=SummarizeConfig)
    tokenizer: Literal["auto", "cl100k_base", "estimate"] = "auto"
    """How prompts are counted (default ``auto``: the GGUF's own tokenizer for llamacpp, tiktoken
    cl100k_base for OpenAI models, a calibrated estimate for Anthropic and other servers)."""
    offload_above_bytes: int = Field(4096, ge=0)
    """Prompts larger than this (JSON bytes) are counted in a worker thread, off the event loop
    (default 4 KiB: a GGUF count of ~1K tokens takes about 10 ms; a thread hop about 0.1 ms).
    Only prompts that fail the byte-bound check are counted at all."""


def context_problems(models: Sequence[Any], served: Mapping[str, str], source: str) -> list[str]:
    """Cross-reference checks: fallback and summarizer models must be served, and not the model itself."""
    problems: list[str] = []
    for index, model in enumerate(models):
        context: ContextConfig = model.context
        where = f"{source}: models[{index}].context"
        for other in context.fallback_models:
            if other not in served:
                problems.append(f"{where}.fallback_models: {other!r} is not a configured model")
            elif served[other] == model.name:
                problems.append(f"{where}.fallback_models: {model.name!r} cannot fall back to itself")
        if context.policy == "summarize" and context.summarize.model not in served:
            problems.append(
                f"{where}.summarize.model: {context.summarize.model!r} is not a configured model; name "
                "a served chat model (the embedded one is `local` unless embedded_models is false)"
            )
    return problems


__all__ = ["ContextConfig", "SummarizeConfig", "ToolOutputCompression", "context_problems"]

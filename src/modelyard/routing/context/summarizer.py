"""The summarizer the context service calls: a request of its own to the summarizer model, admitted,
served and settled like any other (its own ledger rows, request id ``<parent id>-summary``), on
behalf of the caller whose conversation is being folded."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from modelyard.api.asgi import Dialect, RequestContext
from modelyard.providers.base import JSONDict, WireProtocol
from modelyard.routing.context.service import Summarizer
from modelyard.routing.group import ModelGroup

__all__ = ["admitted_summarizer"]


class _Admission(Protocol):
    async def admit(
        self, principal: Any, body: JSONDict, protocol: WireProtocol, group: ModelGroup, ctx: RequestContext
    ) -> Any: ...

    async def settle(self, ticket: Any, ctx: RequestContext, outcome: str) -> None: ...


class _Chat(Protocol):
    async def complete(self, client: WireProtocol, body: JSONDict, ctx: RequestContext) -> bytes: ...


class _Groups(Protocol):
    def group(self, name: object) -> ModelGroup: ...


def admitted_summarizer(admission: _Admission, chat: _Chat, router: _Groups) -> Summarizer:
    async def summarize(body: JSONDict, parent: RequestContext) -> str:
        group = router.group(body["model"])
        sub = RequestContext.new(Dialect.OPENAI, {}, parent.request_id + "-summary")
        sub.principal = parent.principal
        sub.local_only = parent.local_only  # a routing rule's "local only" holds for the summary too
        sub.model = str(body["model"])
        ticket = await admission.admit(parent.principal, body, WireProtocol.OPENAI, group, sub)
        outcome = "error"
        try:
            raw = await chat.complete(WireProtocol.OPENAI, body, sub)
            outcome = "ok"
        finally:
            await admission.settle(ticket, sub, outcome)
        data = orjson.loads(raw)
        text = ((data.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        return str(text)

    return summarize

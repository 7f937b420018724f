"""The OpenAI Responses API: ``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``.

A Responses request is translated into a Chat Completions request
(:mod:`modelyard.translate.responses_api`) and served by the same machinery as
``/v1/chat/completions`` — admission, routing, fallbacks, the ledger — so any served model answers
it. What that machinery sends is translated back on its way out: the plain answer into a Responses
object, a stream's chunks into Responses events.

Stored responses (``store``, default true) keep this turn (input and output, in the neutral form)
so a later request continues with ``previous_response_id``; they are saved before the answer's
last byte leaves, and only when it completed (``completed`` or ``incomplete``), never when it
failed. ``conversation`` (an id, or ``{"id": ...}``) continues a server-side conversation instead
(see :mod:`modelyard.conversations`). Who may read or continue a stored response: as for
conversations (:func:`modelyard.conversations.service.scope_of`); others get a 404 / 400 as if it
did not exist.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from modelyard.api.asgi import Message, Receive, RequestContext, Send, send_json
from modelyard.api.inference import serve_chat
from modelyard.api.validate import check_openai_chat
from modelyard.conversations.model import StoredResponse
from modelyard.conversations.service import CONVERSATION_FIELD, CONVERSATION_HEADER, owner_of
from modelyard.errors import InvalidRequestError, NotFoundError
from modelyard.providers.base import JSONDict, WireProtocol
from modelyard.providers.sse import SSEDecoder
from modelyard.state import AppState
from modelyard.translate.responses_api import (
    check_request,
    from_chat,
    input_items,
    new_id,
    output_to_messages,
    response_skeleton,
    to_chat,
)
from modelyard.translate.responses_api_stream import ResponsesStream

Save = Callable[[JSONDict], Awaitable[None]]


def _conversation_of(body: JSONDict, headers: dict[str, str]) -> str | None:
    """The server-side conversation a Responses request continues (``conversation`` or the
    ``x-modelyard-conversation`` header), if any."""
    value = body.get("conversation")
    if value is None:
        value = headers.get(CONVERSATION_HEADER)
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str):
        raise InvalidRequestError(
            "'conversation' must be a conversation id or {\"id\": ...}", param="conversation"
        )
    if body.get("previous_response_id"):
        raise InvalidRequestError(
            "send either 'previous_response_id' or 'conversation', not both", param="conversation"
        )
    return value


async def create(state: AppState, body: JSONDict, ctx: RequestContext, receive: Receive, send: Send) -> None:
    """``POST /v1/responses``."""
    server = state.config.server
    check_request(body, server.max_output_tokens)
    conversations = state.conversations
    conversation = _conversation_of(body, ctx.headers)
    previous = body.get("previous_response_id")
    history: list[JSONDict] = []
    if previous:
        if not conversations.config.enabled:
            raise InvalidRequestError(
                "stored responses are disabled on this gateway (conversations.enabled); send the whole "
                "history in 'input' instead",
                param="previous_response_id",
            )
        history = await conversations.response_history(previous, ctx.principal)
    chat, new_messages = to_chat(body, history)
    if conversation is not None:
        chat[CONVERSATION_FIELD] = conversation
    check_openai_chat(
        chat, max_messages=server.max_messages + len(history), max_output_tokens=server.max_output_tokens
    )
    store = bool(body.get("store", True)) and conversations.config.enabled and conversation is None
    skeleton = response_skeleton({**body, "store": store}, new_id("resp"))
    principal = ctx.principal

    async def save(response: JSONDict) -> None:
        if not store or response["status"] not in ("completed", "incomplete"):
            return
        await conversations.save_response(
            StoredResponse(
                id=response["id"],
                owner=owner_of(principal),
                created_at=time.time(),
                previous_response_id=previous,
                model=str(body["model"]),
                messages=[*new_messages, *output_to_messages(response["output"])],
                response=response,
                input_items=input_items(body.get("input")),
            )
        )

    await serve_chat(state, WireProtocol.OPENAI, chat, ctx, receive, ResponsesSend(send, skeleton, save))


async def route(state: AppState, method: str, rest: str, ctx: RequestContext, send: Send) -> None:
    """``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``."""
    parts = rest.strip("/").split("/")
    conversations = state.conversations
    if len(parts) == 1 and parts[0]:
        if method == "GET":
            stored = await conversations.get_response(parts[0], ctx.principal)
            await send_json(send, 200, stored.response, ctx)
            return
        if method == "DELETE":
            await conversations.delete_response(parts[0], ctx.principal)
            await send_json(send, 200, {"id": parts[0], "object": "response", "deleted": True}, ctx)
            return
    if len(parts) == 2 and parts[1] == "input_items" and method == "GET":
        stored = await conversations.get_response(parts[0], ctx.principal)
        items = stored.input_items
        await send_json(
            send,
            200,
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": False,
            },
            ctx,
        )
        return
    raise NotFoundError(f"no route {method} /v1/responses/{rest}")


class ResponsesSend:
    """An ASGI ``send`` that turns what the chat machinery sends into the Responses API's shape."""

    def __init__(self, send: Send, skeleton: JSONDict, save: Save) -> None:
        self._send = send
        self._skeleton = skeleton
        self._save = save
        self._start: Message | None = None
        self._body: list[bytes] = []
        self._stream: ResponsesStream | None = None
        self._decoder = SSEDecoder()
        self._passthrough = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k != b"content-length"]
            content_type = next((v for k, v in headers if k == b"content-type"), b"")
            if message.get("status") != 200:
                self._passthrough = True
                await self._send(message)
            elif content_type.startswith(b"text/event-stream"):
                self._stream = ResponsesStream(self._skeleton)
                await self._send({**message, "headers": headers})
                await self._send(
                    {"type": "http.response.body", "body": _encode(self._stream.start()), "more_body": True}
                )
            else:
                self._start = {**message, "headers": headers}
            return
        if kind != "http.response.body" or self._passthrough:
            await self._send(message)
            return
        more = bool(message.get("more_body", False))
        if self._stream is not None:
            out = await self._translate(message.get("body", b""))
            if not more and not self._stream.done:
                out += _encode(self._stream.fail("the answer ended before it was complete"))
            await self._send({"type": "http.response.body", "body": out, "more_body": more})
            return
        self._body.append(message.get("body", b""))
        if more:
            return
        response = from_chat(orjson.loads(b"".join(self._body)), self._skeleton)
        await self._save(response)
        payload = orjson.dumps(response)
        assert self._start is not None
        start = {
            **self._start,
            "headers": [*self._start["headers"], (b"content-length", str(len(payload)).encode())],
        }
        await self._send(start)
        await self._send({"type": "http.response.body", "body": payload})

    async def _translate(self, data: bytes) -> bytes:
        stream = self._stream
        assert stream is not None
        out: list[bytes] = []
        for event in self._decoder.feed(data):
            if stream.done:
                break
            if event.data.strip() == b"[DONE]":
                events = stream.finish()
                await self._save(stream.response)
                out.append(_encode(events))
                continue
            try:
                chunk = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                error = chunk["error"]
                code = str(error.get("code") or error.get("type") or "server_error")
                out.append(_encode(stream.fail(str(error.get("message") or "the upstream failed"), code)))
            elif isinstance(chunk, dict):
                out.append(_encode(stream.feed(chunk)))
        return b"".join(out)


def _encode(events: list[Any]) -> bytes:
    return b"".join(event.encode() for event in events)


__all__ = ["ResponsesSend", "create", "route"]

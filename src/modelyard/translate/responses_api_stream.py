"""Chat Completions stream chunks → the Responses API's streamed events.

Event order, as the OpenAI API sends it: ``response.created``, ``response.in_progress``; per text
output ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``…, ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``; per function call ``response.output_item.added``,
``response.function_call_arguments.delta``…, ``response.function_call_arguments.done``,
``response.output_item.done``; then ``response.completed`` (or ``response.incomplete`` when the
token limit cut the answer). A failure after the first byte ends the stream with
``response.failed`` (never a clean end that looks complete).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from modelyard.providers.base import JSONDict, SSEEvent
from modelyard.translate.responses_api import (
    finish_status,
    function_call_item,
    message_item,
    new_id,
    usage_of,
)


class ResponsesStream:
    """Feed chat chunks (parsed JSON); get Responses SSE events. ``response`` is the final object."""

    def __init__(self, skeleton: JSONDict) -> None:
        self.response = copy.deepcopy(skeleton)
        self._seq = 0
        self._output: list[JSONDict] = []
        self._text_item: JSONDict | None = None
        self._text: list[str] = []
        self._calls: dict[int, tuple[int, JSONDict, list[str]]] = {}
        """chat tool-call index → (output index, item, argument pieces)."""
        self._open_calls: list[int] = []
        self._finish_reason: Any = None
        self._usage: Any = None
        self.done = False

    def _event(self, kind: str, **fields: Any) -> SSEEvent:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return SSEEvent(orjson.dumps(payload), kind)

    def start(self) -> list[SSEEvent]:
        snapshot = copy.deepcopy(self.response)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, chunk: JSONDict) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                events += self._text_delta(text)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._text_item is None:
            events += self._close_calls()
            item = message_item("", status="in_progress")
            item["content"] = []
            self._text_item = item
            self._output.append(item)
            index = len(self._output) - 1
            events.append(self._event("response.output_item.added", output_index=index, item=item))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        self._text.append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._text_item["id"],
                output_index=self._output.index(self._text_item),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _close_text(self) -> list[SSEEvent]:
        item = self._text_item
        if item is None:
            return []
        self._text_item = None
        index = self._output.index(item)
        text = "".join(self._text)
        self._text = []
        done = message_item(text, item["id"])
        self._output[index] = done
        part = done["content"][0]
        return [
            self._event(
                "response.output_text.done",
                item_id=done["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done",
                item_id=done["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
            self._event("response.output_item.done", output_index=index, item=done),
        ]

    def _call_delta(self, call: JSONDict) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        key = int(call.get("index", 0))
        fn = call.get("function") or {}
        if key not in self._calls:
            events += self._close_text()
            item = function_call_item(
                {"id": call.get("id") or new_id("call"), "function": {"name": fn.get("name") or ""}},
                status="in_progress",
            )
            item["arguments"] = ""
            self._output.append(item)
            self._calls[key] = (len(self._output) - 1, item, [])
            self._open_calls.append(key)
            events.append(
                self._event("response.output_item.added", output_index=len(self._output) - 1, item=item)
            )
        index, item, pieces = self._calls[key]
        if fn.get("name") and not item["name"]:
            item["name"] = fn["name"]
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            pieces.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=arguments,
                )
            )
        return events

    def _close_calls(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for key in self._open_calls:
            index, item, pieces = self._calls[key]
            arguments = "".join(pieces) or "{}"
            done = {**item, "arguments": arguments, "status": "completed"}
            self._output[index] = done
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=arguments,
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=done))
        self._open_calls = []
        return events

    def finish(self) -> list[SSEEvent]:
        """The closing events once the chat stream ended cleanly; ``response`` is then final."""
        events = self._close_text() + self._close_calls()
        self.response["output"] = self._output
        self.response["usage"] = usage_of(self._usage)
        finish_status(self.response, self._finish_reason)
        self.done = True
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=self.response))
        return events

    def fail(self, message: str, code: str = "server_error") -> list[SSEEvent]:
        """End the stream with ``response.failed`` (an error after the first byte)."""
        self.response["output"] = self._output
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        self.response["usage"] = usage_of(self._usage)
        self.done = True
        return [self._event("response.failed", response=self.response)]


__all__ = ["ResponsesStream"]

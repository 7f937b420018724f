"""Executes one chat request: choose deployments through the router, translate across protocols,
call, translate back.

The commit point (DESIGN invariant 2) is here: a stream's first event is awaited (within the
deployment's time-to-first-byte timeout) before the caller sees a byte, so failures up to then are
retried or fall back; after it, a failure — an upstream error, a cut, an idle gap longer than
``idle_timeout_s`` — ends the stream with an explicit error event in the caller's protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from modelyard.api.asgi import Dialect, RequestContext
from modelyard.api.errors import stream_error_event
from modelyard.errors import GatewayError, UpstreamError, UpstreamTimeoutError
from modelyard.providers.base import CallContext, JSONDict, Provider, WireProtocol
from modelyard.providers.registry import Target
from modelyard.routing.deployment import DeploymentState
from modelyard.routing.failover import ContinuationTracker, continuation_body, splice
from modelyard.routing.group import ModelGroup
from modelyard.routing.integrity import StreamIntegrity
from modelyard.routing.router import Execution, Router
from modelyard.routing.usage import Usage, UsageSniffer
from modelyard.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)

log = logging.getLogger("modelyard.chat")
T = TypeVar("T")

# Fields that act as a control plane in some gateways (CVE-2024-6587): a request body must never
# choose where a request goes or which credentials travel with it, so they are never forwarded.
CONTROL_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "extra_headers",
        "headers",
        "callbacks",
        "success_callback",
        "failure_callback",
        "logger_fn",
        "proxy",
        "organization",
        "cache",  # the gateway's response-cache directive (modelyard.cache), not the vendor's
        "conversation_id",  # the gateway's server-side conversation (modelyard.conversations)
    }
)


class HeldStream:
    """A started upstream stream that holds its deployment's concurrency slot until it ends."""

    holds_slot = True

    def __init__(
        self,
        first: bytes,
        rest: AsyncIterator[bytes],
        deployment: DeploymentState | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.first = first
        self._rest = rest
        self.deployment = deployment
        self.usage = usage if usage is not None else Usage()
        self.ttft_s: float | None = None
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            if self.deployment is not None:
                self.deployment.release()

    async def aclose(self) -> None:
        try:
            await _aclose(self._rest)
        finally:
            self.release()

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._rest)


@dataclass(slots=True)
class StreamOutcome:
    first: bytes
    rest: AsyncIterator[bytes]


def _forwarded_headers(ctx: RequestContext) -> dict[str, str]:
    return {k: v for k, v in ctx.headers.items() if k in ("anthropic-version", "anthropic-beta")}


class ChatService:
    """Serves chat requests of either protocol from any provider, through the router."""

    def __init__(self, router: Router, *, default_anthropic_max_tokens: int) -> None:
        self._router = router
        self._default_anthropic_max_tokens = default_anthropic_max_tokens

    def _upstream_body(self, client: WireProtocol, target: Target, body: JSONDict) -> JSONDict:
        native = target.provider.protocol
        if native is client:
            upstream = dict(body)
        elif native is WireProtocol.OPENAI:
            upstream = anthropic_request_to_openai(body)
        else:
            upstream = openai_request_to_anthropic(
                body, default_max_tokens=self._default_anthropic_max_tokens
            )
        for name in CONTROL_FIELDS.intersection(upstream):
            del upstream[name]
        upstream["model"] = target.upstream_model
        if native is WireProtocol.OPENAI and upstream.get("stream"):
            # Usage is always captured: ask for it (and hide it again from callers who did not).
            upstream["stream_options"] = {**(upstream.get("stream_options") or {}), "include_usage": True}
        return upstream

    async def _execute(
        self,
        group: ModelGroup,
        call: Callable[[DeploymentState, float], Awaitable[T]],
        body: JSONDict,
        ctx: RequestContext,
        exclude: set[str] | None = None,
    ) -> Execution[T]:
        if ctx.context_exclude:
            exclude = set(exclude or ()) | ctx.context_exclude  # windows too small (routing.context)
        try:
            execution = await self._router.execute(
                group,
                call,
                body=body,
                # A routing rule's "local only" holds for every attempt: fallbacks and hedges too.
                supports=_local_chat if ctx.local_only else _chat,
                exclude=exclude,
                headers=ctx.headers,
            )
        except GatewayError as exc:
            attempts = getattr(exc, "attempts", None)
            ctx.attempt_log = list(attempts or [])
            if attempts:
                # The error answer names the deployment that failed last and how many were tried.
                ctx.deployment = attempts[-1].deployment
                ctx.attempts = len(attempts)
            raise
        ctx.deployment = execution.deployment.label
        ctx.attempts = len(execution.attempts)
        ctx.attempt_log = list(execution.attempts)
        ctx.route = execution.reason
        return execution

    async def complete(self, client: WireProtocol, body: JSONDict, ctx: RequestContext) -> bytes:
        group = self._router.group(body["model"])
        call_ctx = CallContext(ctx.request_id, extra_headers=_forwarded_headers(ctx))
        # Usage as the serving upstream reported it, in its own protocol: a translated answer
        # cannot say everything (OpenAI's usage has no cache writes).
        native_usage: dict[str, Usage] = {}

        async def call(dep: DeploymentState, per_try_s: float) -> bytes:
            target = dep.target
            provider = target.provider
            upstream = self._upstream_body(client, target, body)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(per_try_s):
                    if provider.protocol is client:
                        return await provider.complete_raw(upstream, call_ctx)
                    response = await provider.complete(upstream, call_ctx)
                    native_usage[dep.label] = usage = Usage()
                    usage.from_response(provider.protocol, response)
            except TimeoutError:
                raise UpstreamTimeoutError(
                    f"{target.label} gave no answer within the deadline",
                    provider=provider.name,
                    model=target.upstream_model,
                ) from None
            finally:
                ctx.upstream_s += time.perf_counter() - started
            return orjson.dumps(self._translate_response(client, response, target))

        execution = await self._execute(group, call, body, ctx)
        native = native_usage.get(execution.deployment.label)
        if native is not None:
            ctx.usage = native
        else:
            ctx.usage.from_response(client, execution.result)
        return execution.result

    @staticmethod
    def _translate_response(client: WireProtocol, response: JSONDict, target: Target) -> JSONDict:
        model = str(response.get("model") or target.upstream_model)
        if client is WireProtocol.ANTHROPIC:
            return openai_response_to_anthropic(response, model=model)
        return anthropic_response_to_openai(response, model=model)

    async def stream(
        self,
        client: WireProtocol,
        body: JSONDict,
        ctx: RequestContext,
        *,
        exclude: set[str] | None = None,
        allow_failover: bool = True,
    ) -> StreamOutcome:
        group = self._router.group(body["model"])
        call_ctx = CallContext(ctx.request_id, extra_headers=_forwarded_headers(ctx))

        async def call(dep: DeploymentState, per_try_s: float) -> HeldStream:
            target = dep.target
            upstream = self._upstream_body(client, target, body)
            usage = Usage()
            encoded = self._encode(client, target.provider, upstream, call_ctx, body, target, usage)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(min(dep.policy.ttfb_timeout_s, per_try_s)):
                    first = await anext(encoded)
            except TimeoutError:
                await _aclose(encoded)
                raise UpstreamTimeoutError(
                    f"{target.label} sent no first byte within {dep.policy.ttfb_timeout_s:g}s",
                    provider=target.provider.name,
                    model=target.upstream_model,
                ) from None
            except StopAsyncIteration:
                raise UpstreamError(
                    "the upstream ended the stream before sending anything",
                    status=502,
                    provider=target.provider.name,
                    model=target.upstream_model,
                ) from None
            except BaseException:
                await _aclose(encoded)
                raise
            finally:
                ctx.upstream_s += time.perf_counter() - started
            held = HeldStream(first, encoded, dep, usage)
            held.ttft_s = time.perf_counter() - started
            return held

        execution = await self._execute(group, call, body, ctx, exclude)
        held = execution.result
        ctx.usage = held.usage
        ctx.ttft_s = held.ttft_s
        idle = execution.deployment.policy.idle_timeout_s
        if allow_failover and group.routing.mid_stream_failover and not body.get("tools"):
            tracker = ContinuationTracker(client)
            tracker.observe(held.first)

            async def failover(partial: str) -> AsyncIterator[bytes] | None:
                return await self._continue(client, body, ctx, partial, tracker)

            return StreamOutcome(
                held.first, GuardedStream(held, ctx, idle, failover=failover, tracker=tracker)
            )
        return StreamOutcome(held.first, GuardedStream(held, ctx, idle))

    async def _continue(
        self,
        client: WireProtocol,
        body: JSONDict,
        ctx: RequestContext,
        partial: str,
        tracker: ContinuationTracker,
    ) -> AsyncIterator[bytes] | None:
        """Start the rest of a cut text stream on another deployment; None if none can take it."""
        failed = ctx.deployment
        sub = RequestContext.new(ctx.dialect, ctx.headers, ctx.request_id)
        sub.local_only = ctx.local_only  # the continuation obeys the same routing rules
        try:
            outcome = await self.stream(
                client,
                continuation_body(client, body, partial),
                sub,
                exclude={failed} if failed else None,
                allow_failover=False,
            )
        except GatewayError as exc:
            log.warning("mid-stream failover for %s found no deployment: %s", ctx.request_id, exc.message)
            return None
        if ctx.attempt_log:
            ctx.attempt_log[-1].outcome = "cut"
        ctx.attempt_log += sub.attempt_log
        ctx.route = f"failover:{sub.deployment}"
        ctx.deployment = sub.deployment
        total = ctx.usage

        async def spliced() -> AsyncIterator[bytes]:
            try:
                async for chunk in splice(client, tracker, outcome.first, outcome.rest):
                    yield chunk
            finally:
                await outcome.rest.aclose()  # type: ignore[attr-defined]
                total.estimate_if_unreported(0)
                part = sub.usage
                total.tokens_out += part.tokens_out
                total.cache_read += part.cache_read
                ctx.outcome = sub.outcome

        return spliced()

    async def _encode(
        self,
        client: WireProtocol,
        provider: Provider,
        upstream: JSONDict,
        call: CallContext,
        body: JSONDict,
        target: Target,
        usage: Usage,
    ) -> AsyncIterator[bytes]:
        events = provider.stream(upstream, call)
        sniffer = UsageSniffer(provider.protocol, usage)
        integrity = StreamIntegrity(provider.protocol)
        try:
            if provider.protocol is client:
                hide_usage = client is WireProtocol.OPENAI and not (body.get("stream_options") or {}).get(
                    "include_usage"
                )
                async for event in events:
                    if not integrity.accept(event):
                        continue
                    sniffer.feed(event)
                    if hide_usage:
                        data = event.data
                        if b'"usage":{' in data:
                            if b'"choices":[]' in data:
                                continue  # the usage-only chunk the caller did not ask for
                            chunk = orjson.loads(data)  # usage riding on a content chunk (DeepSeek, vLLM)
                            chunk.pop("usage", None)
                            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                            continue
                        if b',"usage":null' in data:
                            yield b"data: " + data.replace(b',"usage":null', b"") + b"\n\n"
                            continue
                    yield event.encode()
                self._check_complete(integrity, provider, target)
                terminator = integrity.missing_terminator()
                if terminator is not None:
                    yield terminator
                return
            translator: OpenAIToAnthropicStream | AnthropicToOpenAIStream
            if client is WireProtocol.ANTHROPIC:
                translator = OpenAIToAnthropicStream(model=target.upstream_model)
            else:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                translator = AnthropicToOpenAIStream(model=target.upstream_model, include_usage=include_usage)
            async for event in events:
                if not integrity.accept(event):
                    continue
                sniffer.feed(event)
                for out in translator.feed(event):
                    yield out.encode()
            self._check_complete(integrity, provider, target)
            for out in translator.finish():
                yield out.encode()
        finally:
            await _aclose(events)

    @staticmethod
    def _check_complete(integrity: StreamIntegrity, provider: Provider, target: Target) -> None:
        error = integrity.incomplete_error(provider.name, target.upstream_model)
        if error is not None:
            raise error


class GuardedStream:
    """After the commit point: idle timeout between chunks; any failure becomes an explicit error
    event in the caller's protocol, then the end. Releases the deployment's slot exactly once,
    whether the stream completes, fails or the client goes away."""

    def __init__(
        self,
        held: HeldStream,
        ctx: RequestContext,
        idle_timeout_s: float,
        *,
        failover: Callable[[str], Awaitable[AsyncIterator[bytes] | None]] | None = None,
        tracker: ContinuationTracker | None = None,
    ) -> None:
        self._held: Any = held
        self._ctx = ctx
        self._idle = idle_timeout_s
        self._done = False
        self._failover = failover
        self._tracker = tracker

    def __aiter__(self) -> GuardedStream:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(self._idle):
                chunk: bytes = await anext(self._held)
            if self._tracker is not None:
                self._tracker.observe(chunk)
            return chunk
        except StopAsyncIteration:
            await self._finish()
            raise
        except (TimeoutError, GatewayError) as failure:
            if await self._try_failover():
                return await self.__anext__()
            error = self._failure_event(failure)
        except Exception:
            self._ctx.outcome = "error"
            log.exception("stream failed inside the gateway (request %s)", self._ctx.request_id)
            error = GatewayError(f"the stream failed inside the gateway (request {self._ctx.request_id})")
        await self._finish()
        return stream_error_event(error, self._ctx)

    async def _try_failover(self) -> bool:
        if self._failover is None or self._tracker is None or not self._tracker.eligible:
            return False
        failover, self._failover = self._failover, None  # once per request
        continuation = await failover(self._tracker.partial)
        if continuation is None:
            return False
        await self._held.aclose()  # frees the failed deployment's slot
        self._held = continuation
        self._tracker = None
        self._ctx.outcome = "ok"
        return True

    def _failure_event(self, failure: BaseException) -> GatewayError:
        if isinstance(failure, GatewayError):
            self._ctx.outcome = "upstream_cut"
            return failure
        self._ctx.outcome = "timeout"
        return UpstreamTimeoutError(
            f"the upstream stalled: no data for {self._idle:g}s (idle_timeout_s)",
            provider="gateway",
            model=self._ctx.deployment or "",
        )

    async def _finish(self) -> None:
        self._done = True
        await self._held.aclose()

    async def aclose(self) -> None:
        self._done = True
        await self._held.aclose()


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _chat(dep: DeploymentState) -> bool:
    return dep.target.chat


def _local_chat(dep: DeploymentState) -> bool:
    return dep.target.chat and dep.policy.local


def client_protocol(dialect: Dialect) -> WireProtocol:
    return WireProtocol.ANTHROPIC if dialect is Dialect.ANTHROPIC else WireProtocol.OPENAI


__all__ = ["ChatService", "GuardedStream", "HeldStream", "StreamOutcome", "client_protocol"]

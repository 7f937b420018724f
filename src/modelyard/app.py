"""``create_app(config)``: the ASGI application.

One visible pipeline for every request: request context → route lookup → auth → body (size
limit before buffering) → handler; errors at either end are rendered in the caller's dialect.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from modelyard.api import anthropic as anthropic_api
from modelyard.api import feedback as feedback_api
from modelyard.api import input_tokens as input_tokens_api
from modelyard.api import openai as openai_api
from modelyard.api import responses as responses_api
from modelyard.api.admin import parse_query, require_reader
from modelyard.api.asgi import (
    Dialect,
    Receive,
    RequestContext,
    RequestIds,
    Scope,
    Send,
    header_map,
    parse_json_object,
    read_body,
    send_bytes,
    send_json,
)
from modelyard.api.errors import error_headers, error_payload
from modelyard.api.openapi import Limits, gateway_document
from modelyard.cache import admin as cache_admin
from modelyard.config.load import RuntimeConfig
from modelyard.conversations import admin as conversations_admin
from modelyard.dashboard import requests_api, serve_ui
from modelyard.errors import GatewayError, NotFoundError
from modelyard.policy.auth import Principal
from modelyard.state import AppState
from modelyard.telemetry.build import build_record
from modelyard.telemetry.observability import METRICS_CONTENT_TYPE

log = logging.getLogger("modelyard.access")

JSONHandler = Callable[[AppState, dict[str, Any], RequestContext, Receive, Send], Awaitable[None]]


ADMIN_PATHS = (
    ["deployments"],
    ["keys"],
    ["budgets"],
    ["spend"],
    ["ledger"],
    ["requests"],
    ["conversations"],
    ["routes"],
    ["cache"],
    ["cache", "clear"],
)


class MethodNotAllowed(GatewayError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


async def _chat(s: AppState, b: dict[str, Any], c: RequestContext, r: Receive, w: Send) -> None:
    await openai_api.chat_completions(s, b, c, r, w)


async def _embeddings(s: AppState, b: dict[str, Any], c: RequestContext, r: Receive, w: Send) -> None:
    await openai_api.embeddings(s, b, c, w)


async def _messages(s: AppState, b: dict[str, Any], c: RequestContext, r: Receive, w: Send) -> None:
    await anthropic_api.messages(s, b, c, r, w)


async def _count(s: AppState, b: dict[str, Any], c: RequestContext, r: Receive, w: Send) -> None:
    await anthropic_api.count_tokens(s, b, c, w)


async def _input_tokens(s: AppState, b: dict[str, Any], c: RequestContext, r: Receive, w: Send) -> None:
    await input_tokens_api.input_tokens(s, b, c, w)


# POST routes taking a JSON body: path → (dialect, handler). Both /v1/x and /x are accepted, as
# clients differ in whether their base URL carries /v1.
POST_ROUTES: dict[str, tuple[Dialect, JSONHandler]] = {}
for _path, _dialect, _handler in (
    ("/chat/completions", Dialect.OPENAI, _chat),
    ("/embeddings", Dialect.OPENAI, _embeddings),
    ("/messages", Dialect.ANTHROPIC, _messages),
    ("/messages/count_tokens", Dialect.ANTHROPIC, _count),
    ("/responses/input_tokens", Dialect.OPENAI, _input_tokens),
    ("/responses", Dialect.OPENAI, responses_api.create),
    ("/feedback", Dialect.OPENAI, feedback_api.feedback),
):
    POST_ROUTES["/v1" + _path] = (_dialect, _handler)
    POST_ROUTES[_path] = (_dialect, _handler)
del _path, _dialect, _handler


class ModelyardApp:
    """The ASGI callable. Holds the AppState once the lifespan has built it."""

    def __init__(self, config: RuntimeConfig, *, start_local_models: bool = True) -> None:
        self.config = config
        self.state: AppState | None = None
        self._ids = RequestIds()
        self._start_local = start_local_models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.state = AppState.build(self.config)
                    await self.state.open()
                    if self._start_local:
                        self.state.start_local_models()
                    # Everything built so far lives as long as the process: keep the cyclic GC
                    # from rescanning it, and let it run less often on the hot path.
                    gc.collect()
                    gc.freeze()
                    gc.set_threshold(50_000, 20, 100)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.state is not None:
                    await self.state.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = header_map(scope)
        route = POST_ROUTES.get(path)
        dialect = (
            route[0] if route else (Dialect.ANTHROPIC if "anthropic-version" in headers else Dialect.OPENAI)
        )
        ctx = RequestContext.new(dialect, headers, self._ids())
        status = 200
        try:
            state = self.state
            if state is None:
                raise GatewayError("the gateway is starting up; retry in a moment")
            if path in ("/healthz", "/readyz"):
                await self._health(state, path, ctx, send)
                return
            if path == "/metrics":
                await self._metrics(state, method, headers, send)
                return
            if path == "/openapi.json" and method == "GET":
                server = state.config.server
                limits = Limits(server.max_messages, server.max_output_tokens)
                document = orjson.dumps(gateway_document(state.registry, limits))
                await send_bytes(send, 200, document, ctx.response_headers(b"application/json"))
                return
            if path == "/ui" or path.startswith("/ui/"):
                await serve_ui(state, scope, receive, send, ctx)  # its own login and session cookie
                return
            principal = await state.auth.authenticate(headers)
            ctx.principal = principal
            if path.startswith("/admin/"):
                await self._admin(state, principal, scope, receive, path, method, ctx, send)
            elif route is not None:
                if method != "POST":
                    raise MethodNotAllowed(f"{path} takes POST, not {method}")
                body = parse_json_object(
                    await read_body(receive, headers, state.config.server.max_body_bytes)
                )
                await route[1](state, body, ctx, receive, send)
            elif path.rstrip("/") in ("/v1/models", "/models"):
                if method != "GET":
                    raise MethodNotAllowed(f"{path} takes GET, not {method}")
                await openai_api.list_models(state, ctx, send)
            elif path.startswith(("/v1/models/", "/models/")) and method == "GET":
                await openai_api.get_model(state, path.split("/models/", 1)[1], ctx, send)
            elif path.startswith(("/v1/responses/", "/responses/")) and method in ("GET", "DELETE"):
                await responses_api.route(state, method, path.split("/responses/", 1)[1], ctx, send)
            else:
                raise NotFoundError(
                    f"no route {method} {path}; modelyard serves /v1/chat/completions, /v1/messages, "
                    "/v1/messages/count_tokens, /v1/responses, /v1/embeddings, /v1/models, "
                    "/admin/deployments, /healthz, /readyz"
                )
        except GatewayError as exc:
            status = exc.status
            ctx.error = exc
            await self._send_error(exc, ctx, send)
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as exc:
            status = 500
            ctx.error = exc
            log.exception("unhandled error in request %s", ctx.request_id)
            await self._send_error(
                GatewayError(f"internal gateway error; report request id {ctx.request_id}"), ctx, send
            )
        finally:
            state = self.state
            if state is not None and path not in ("/healthz", "/readyz", "/metrics"):
                state.telemetry.emit(
                    build_record(
                        ctx, method=method, path=path, status=status, router=state.router, redact=state.redact
                    )
                )

    async def _admin(
        self,
        state: AppState,
        principal: Principal,
        scope: Scope,
        receive: Receive,
        path: str,
        method: str,
        ctx: RequestContext,
        send: Send,
    ) -> None:
        """Dispatch /admin/* (roles are checked by each handler, see modelyard.api.admin)."""
        admin = state.admin
        query = parse_query(scope.get("query_string", b""))
        parts = path.rstrip("/").split("/")[2:]  # after "/admin"

        async def body() -> dict[str, Any]:
            raw = await read_body(receive, ctx.headers, state.config.server.max_body_bytes)
            return parse_json_object(raw) if raw else {}

        match (method, parts):
            case ("GET", ["deployments"]):
                require_reader(principal)
                await send_json(
                    send,
                    200,
                    {"models": state.router.snapshot(), "local_costs": state.prices.local_state()},
                    ctx,
                )
            case ("GET", ["keys"]):
                await admin.list_keys(principal, query, ctx, send)
            case ("POST", ["keys"]):
                await admin.create_key(principal, await body(), ctx, send)
            case ("GET", ["keys", key_id]):
                await admin.get_key(principal, key_id, ctx, send)
            case ("POST", ["keys", key_id, "revoke"]):
                await admin.revoke_key(principal, key_id, ctx, send)
            case ("POST", ["keys", key_id, "rotate"]):
                await admin.rotate_key(principal, key_id, await body(), ctx, send)
            case ("GET", ["budgets"]):
                await admin.budgets(principal, query, ctx, send)
            case ("PUT", ["budgets"]):
                await admin.set_budget(principal, await body(), ctx, send)
            case ("DELETE", ["budgets"]):
                await admin.set_budget(principal, await body(), ctx, send, delete=True)
            case ("GET", ["spend"]):
                await admin.spend(principal, query, ctx, send)
            case ("GET", ["ledger"]):
                await admin.ledger(principal, query, ctx, send)
            case ("GET", ["routes"]):
                require_reader(principal)
                routes = state.smart.snapshot() if state.smart is not None else []
                await send_json(send, 200, {"routes": routes}, ctx)
            case ("GET", ["cache"]):
                await cache_admin.stats(state.cache, principal, ctx, send)
            case ("POST", ["cache", "clear"]):
                await cache_admin.clear(state.cache, principal, ctx, send)
            case ("GET", ["requests"]):
                await requests_api.search(state.store, principal, query, ctx, send)
            case ("GET", ["requests", request_id]):
                await requests_api.detail(state.store, principal, request_id, ctx, send)
            case ("GET", ["conversations"]):
                await conversations_admin.list_conversations(state.conversations, principal, query, ctx, send)
            case ("POST", ["conversations", "purge"]):
                await conversations_admin.purge(state.conversations, principal, await body(), ctx, send)
            case ("GET", ["conversations", conversation_id]):
                await conversations_admin.get_conversation(
                    state.conversations, principal, conversation_id, ctx, send
                )
            case ("DELETE", ["conversations", conversation_id]):
                await conversations_admin.delete_conversation(
                    state.conversations, principal, conversation_id, ctx, send
                )
            case _:
                if any(p == parts for p in ADMIN_PATHS):
                    raise MethodNotAllowed(f"{path} does not take {method}")
                raise NotFoundError(f"no admin route {method} {path}; see the admin API in the README")

    @staticmethod
    async def _send_error(exc: GatewayError, ctx: RequestContext, send: Send) -> None:
        try:
            body = error_payload(exc, ctx)
            # 529 ("overloaded") is Anthropic's own; OpenAI clients know it as 503.
            status = 503 if exc.status == 529 and ctx.dialect is not Dialect.ANTHROPIC else exc.status
            await send_bytes(
                send,
                status,
                orjson.dumps(body),
                [*ctx.response_headers(b"application/json"), *error_headers(exc)],
            )
        except RuntimeError:
            # The response had already started (a stream): nothing more can be said on it.
            pass

    @staticmethod
    async def _metrics(state: AppState, method: str, headers: dict[str, str], send: Send) -> None:
        """Prometheus exposition; open unless ``observability.metrics_auth`` (then admin/viewer)."""
        if method != "GET":
            raise MethodNotAllowed(f"/metrics takes GET, not {method}")
        if state.observability.config.metrics_auth:
            require_reader(await state.auth.authenticate(headers))
        body = await state.observability.render()
        await send_bytes(send, 200, body, [(b"content-type", METRICS_CONTENT_TYPE)])

    async def _health(self, state: AppState, path: str, ctx: RequestContext, send: Send) -> None:
        if path == "/healthz":
            await send_json(send, 200, {"status": "ok"}, ctx)
            return
        ready, problems = await state.ready()
        models = state.config.model_names()
        body = {"status": "ready" if ready else "not_ready", "models": models, "problems": problems}
        await send_json(send, 200 if ready else 503, body, ctx)


def create_app(config: RuntimeConfig, *, start_local_models: bool = True) -> ModelyardApp:
    """The ASGI app for ``config``; its lifespan builds and closes all state."""
    return ModelyardApp(config, start_local_models=start_local_models)


def create_app_from_env() -> ModelyardApp:
    """Factory for multi-process serving: each worker loads the config named by MODELYARD_CONFIG."""
    from modelyard.config import load_config_file

    return create_app(load_config_file(None))


__all__ = ["ModelyardApp", "create_app", "create_app_from_env"]

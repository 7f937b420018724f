"""``/ui``: the dashboard's request handling — login, session check, page dispatch, headers.

Every response carries a strict Content-Security-Policy: no external source of anything, and
scripts only with this response's nonce (the auto-refresh snippet), so even a rendering bug could
not run injected script. Pages are never cached and never framed.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

from modelyard.api.admin import parse_query
from modelyard.api.asgi import Receive, RequestContext, Scope, Send, read_body, send_bytes
from modelyard.dashboard import data, pages
from modelyard.dashboard.html import DEFAULT_RANGE, RANGES, esc, page
from modelyard.dashboard.session import Sessions, login, principal_of, set_cookie
from modelyard.policy.auth import Principal
from modelyard.state import AppState

MAX_LOGIN_BODY = 4096
PAGE_HANDLERS = {
    "/ui": pages.overview,
    "/ui/models": pages.models,
    "/ui/routing": pages.routing,
    "/ui/spend": pages.spend,
    "/ui/cache": pages.cache,
}


def _headers(
    nonce: str, ctx: RequestContext, content_type: bytes = b"text/html; charset=utf-8"
) -> list[tuple[bytes, bytes]]:
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return [
        (b"content-type", content_type),
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
        (b"x-request-id", ctx.request_id.encode()),
    ]


def _redirect(location: str, ctx: RequestContext, cookie: bytes | None = None) -> list[tuple[bytes, bytes]]:
    headers = [*_headers("-", ctx), (b"location", location.encode())]
    if cookie is not None:
        headers.append((b"set-cookie", cookie))
    return headers


def _login_page(nonce: str, message: str = "") -> bytes:
    error = f'<p class="err" id="login-error">{esc(message)}</p>' if message else ""
    body = (
        f"{error}<p>Log in with the master key or an admin or viewer key. The key is checked once; "
        "the browser then keeps a signed session cookie (12 hours), never the key.</p>"
        '<form method="post" action="/ui/login"><label>API key '
        '<input type="password" name="key" id="key" autocomplete="off" size="48" autofocus></label> '
        '<button type="submit" id="login">Log in</button></form>'
    )
    return page(title="Log in", path="/ui/login", body=body, nonce=nonce, refresh=False)


def _principal_label(principal: Principal) -> str:
    if principal.key is None:
        return "master key" if principal.is_master else "open gateway"
    return f"{principal.hint} ({principal.role.value})"


async def serve_ui(state: AppState, scope: Scope, receive: Receive, send: Send, ctx: RequestContext) -> None:
    """Answer one ``/ui`` request (the caller routes every ``/ui`` and ``/ui/…`` path here)."""
    path = scope["path"].rstrip("/") or "/ui"
    method = scope["method"]
    nonce = os.urandom(12).hex()
    sessions = Sessions.for_master_key(state.config.master_key)
    secure = scope.get("scheme") == "https"

    if path == "/ui/login":
        if method == "POST":
            raw = await read_body(receive, ctx.headers, MAX_LOGIN_BODY)
            form = parse_qs(raw.decode("utf-8", errors="replace"))
            principal = await login(state.auth, (form.get("key") or [""])[-1])
            if principal is None or sessions.secret is None:
                # One message whatever the reason: it reveals nothing about which keys exist.
                message = (
                    "That key cannot open the dashboard: it needs the master key or an admin or viewer key."
                )
                await send_bytes(send, 401, _login_page(nonce, message), _headers(nonce, ctx))
                return
            ctx.principal = principal
            cookie = set_cookie(sessions.issue(principal), secure=secure)
            await send_bytes(send, 303, b"", _redirect("/ui", ctx, cookie))
            return
        if sessions.secret is None:
            await send_bytes(send, 303, b"", _redirect("/ui", ctx))
            return
        await send_bytes(send, 200, _login_page(nonce), _headers(nonce, ctx))
        return
    if path == "/ui/logout":
        await send_bytes(
            send, 303, b"", _redirect("/ui/login", ctx, set_cookie("", secure=secure, clear=True))
        )
        return

    principal = await principal_of(sessions, state.auth, state.store, ctx.headers)
    if principal is None:
        await send_bytes(send, 303, b"", _redirect("/ui/login", ctx))
        return
    ctx.principal = principal
    if method != "GET":
        await send_bytes(send, 405, b"GET only", [(b"content-type", b"text/plain"), (b"allow", b"GET")])
        return
    query = parse_query(scope.get("query_string", b""))
    range_name = query.get("range", DEFAULT_RANGE)
    if range_name not in RANGES:
        range_name = DEFAULT_RANGE
    window = data.Window.last(range_name, RANGES[range_name])
    who = _principal_label(principal)
    extra: dict[str, str] = {}
    refresh = True
    if path in PAGE_HANDLERS:
        title, body = await PAGE_HANDLERS[path](state, principal, window)
    elif path == "/ui/requests":
        title, body = await pages.requests(state, principal, window, query)
        extra = {k: v for k, v in query.items() if k in ("q", "key", "team", "model", "deployment", "status")}
        refresh = False
    elif path.startswith("/ui/requests/"):
        found = await pages.request_detail(state, principal, path.removeprefix("/ui/requests/"))
        if found is None:
            html = page(
                title="Not found",
                path=path,
                body="<p>No such request (or not yours to see).</p>",
                nonce=nonce,
                who=who,
                refresh=False,
            )
            await send_bytes(send, 404, html, _headers(nonce, ctx))
            return
        title, body = found
        html = page(title=title, path=path, body=body, nonce=nonce, who=who, refresh=False)
        await send_bytes(send, 200, html, _headers(nonce, ctx))
        return
    else:
        html = page(
            title="Not found", path=path, body="<p>No such page.</p>", nonce=nonce, who=who, refresh=False
        )
        await send_bytes(send, 404, html, _headers(nonce, ctx))
        return
    html = page(
        title=title,
        path=path,
        body=body,
        nonce=nonce,
        range_name=range_name,
        who=who,
        refresh=refresh,
        extra_query=extra,
    )
    await send_bytes(send, 200, html, _headers(nonce, ctx))

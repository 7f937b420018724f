"""Dashboard sessions: a login form checks an admin or viewer key once, then an HMAC-signed cookie.

The cookie holds the key's *id* (or ``master``) and an expiry, signed with HMAC-SHA256 under a
secret derived from the master key — so every gateway process sharing the config accepts it, and
it survives restarts; changing the master key ends every session. The key itself is never in the
cookie. Each page view re-reads the key record, so a revoked or expired key's session ends at once.
The cookie is ``HttpOnly; SameSite=Strict`` (``Secure`` when served over https).

A gateway without a master key is open (the API needs no key either): the dashboard then needs no
login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

from modelyard.errors import AuthenticationError
from modelyard.policy.auth import ANONYMOUS, Authenticator, Principal
from modelyard.store.base import Role, Store

COOKIE = "modelyard_session"
SESSION_TTL_S = 12 * 3600
_CONTEXT = b"modelyard/dashboard-session/v1"
READER_ROLES = (Role.ADMIN, Role.VIEWER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Sessions:
    """Signs and checks session cookies for one gateway configuration."""

    secret: bytes | None
    """None: an open gateway (no master key), where no session is needed."""

    @classmethod
    def for_master_key(cls, master_key: str | None) -> Sessions:
        if not master_key:
            return cls(None)
        return cls(hmac.new(master_key.encode(), _CONTEXT, hashlib.sha256).digest())

    def issue(self, principal: Principal, now: float | None = None) -> str:
        assert self.secret is not None
        payload = {"sub": principal.key_id or "master", "exp": int((now or time.time()) + SESSION_TTL_S)}
        body = _b64(orjson.dumps(payload))
        return body + "." + _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())

    def subject(self, cookie: str, now: float | None = None) -> str | None:
        """The signed subject (a key id or ``master``) of a valid, unexpired cookie."""
        if self.secret is None or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        expected = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return None
        try:
            payload = orjson.loads(_unb64(body))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(payload, dict) or float(payload.get("exp", 0)) < (now or time.time()):
            return None
        sub = payload.get("sub")
        return sub if isinstance(sub, str) else None


def cookie_of(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def set_cookie(value: str, *, secure: bool, clear: bool = False) -> bytes:
    attrs = ["Path=/ui", "HttpOnly", "SameSite=Strict", f"Max-Age={0 if clear else SESSION_TTL_S}"]
    if secure:
        attrs.append("Secure")
    return "; ".join([f"{COOKIE}={'' if clear else value}", *attrs]).encode()


async def principal_of(
    sessions: Sessions, auth: Authenticator, store: Store, headers: dict[str, str]
) -> Principal | None:
    """Who is looking: from an ``Authorization`` header, or a session cookie; None = log in."""
    if sessions.secret is None:
        return ANONYMOUS if auth.open else None
    if "authorization" in headers or "x-api-key" in headers:
        try:
            principal = await auth.authenticate(headers)
        except AuthenticationError:
            return None
        return principal if principal.role in READER_ROLES else None
    cookie = cookie_of(headers)
    subject = None if cookie is None else sessions.subject(cookie)
    if subject is None:
        return None
    if subject == "master":
        return Principal(Role.ADMIN, None, "master")
    record = await store.key_by_id(subject)
    if record is None or not record.active(time.time()) or record.role not in READER_ROLES:
        return None
    return Principal(record.role, record, record.hint)


async def login(auth: Authenticator, key: str) -> Principal | None:
    """The principal of a key typed into the login form, if it may use the dashboard."""
    if not key:
        return None
    try:
        principal = await auth.authenticate({"authorization": "Bearer " + key.strip()})
    except AuthenticationError:
        return None
    if principal is ANONYMOUS or principal.role not in READER_ROLES:
        return None
    return principal

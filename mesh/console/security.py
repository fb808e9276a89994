"""What keeps the console safe to leave running: who may use it, from where, and how.

* **Where.** Bound to loopback (the default), only a request addressed to a
  loopback name (``Host``) is served: a web page whose own name an attacker made
  resolve to 127.0.0.1 (DNS rebinding) is refused. Bound anywhere else, a token
  is required: ``serve`` refuses to start without one.
* **Who.** With a token, every request carries it, as ``Authorization: Bearer``
  or as the ``mesh_console`` cookie (HttpOnly, SameSite=Strict) that
  ``GET /login?token=...`` sets. The cookie holds a value derived from the token,
  not the token; both are compared in constant time.
* **How.** A request that changes something (any method but GET and HEAD) must
  carry ``X-CSRF-Token`` (a random value per process, which ``/api/session``
  gives to the console's own page only: other sites cannot read it), and, when
  the browser says where it comes from (``Origin``, ``Sec-Fetch-Site``), come
  from this very origin. Refusals are 403.
* **What the browser may do with the answers.** Every response says: scripts
  and styles from this origin only (no inline script), not in a frame, no
  content sniffing, no referrer, not cached.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mesh.console.responses import error_response
from mesh.errors import ConfigError

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "LOOPBACK_HOSTS",
    "SECURITY_HEADERS",
    "ConsoleGuard",
    "check_token",
    "is_loopback",
]

COOKIE = "mesh_console"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_TOKEN_CHARS = 16
SAFE_METHODS = frozenset({"GET", "HEAD"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str) -> str:
    """``token`` if it can guard a console: long enough not to be guessed, and plain
    (it travels in a header and a URL)."""
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() \
            or any(c in token for c in " ;,&#%+\"\\"):  # fmt: skip
        raise ConfigError(
            f"the console token must be at least {MIN_TOKEN_CHARS} characters of letters, "
            "digits and punctuation other than ;,&#%+\"\\ (no spaces); `python -c 'import "
            "secrets; print(secrets.token_urlsafe(24))'` makes one"
        )
    return token


def _session_value(token: str) -> str:
    """The cookie's value: derived from the token, so that the cookie jar holds no token."""
    return hmac.new(token.encode(), b"mesh console session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class ConsoleGuard:
    """ASGI middleware in front of the whole console (see the module's docstring);
    it also answers ``GET /login``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        csrf: str,
        allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    ) -> None:
        self.app = app
        self.token = token
        self.csrf = csrf
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        self._session = None if token is None else _session_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
        elif scope["path"] == "/login":
            await self._login(scope)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        if self.allowed_hosts is not None and _hostname(headers) not in self.allowed_hosts:
            return error_response(403, "this console answers to 127.0.0.1 and localhost only "
                                       "(the Host of this request is another name)")  # fmt: skip
        if scope["path"] != "/login" and not self._authenticated(headers):
            response = error_response(401, "this console needs its token: open "
                                           "/login?token=TOKEN, or send Authorization: Bearer "
                                           "TOKEN")  # fmt: skip
            response.headers["www-authenticate"] = "Bearer"
            return response
        if scope["method"] not in SAFE_METHODS:
            why = self._cross_site(scope, headers)
            if why:
                return error_response(403, why)
        return None

    def _authenticated(self, headers: Headers) -> bool:
        if self.token is None or self._session is None:
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given:
            return _same(given.strip(), self.token)
        cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE, "")
        return bool(cookie) and _same(cookie, self._session)

    def _cross_site(self, scope: Scope, headers: Headers) -> str:
        """Why a state-changing request is refused ("" if it is not)."""
        if not _same(headers.get(CSRF_HEADER, ""), self.csrf):
            return "missing or wrong X-CSRF-Token (the page gets it from /api/session)"
        origin = headers.get("origin")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
            if origin.lower() != own:
                return "cross-origin request refused (Origin is not this console)"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "cross-site request refused (Sec-Fetch-Site)"
        return ""

    def _login(self, scope: Scope) -> Response:
        """``/login?token=...``: the session cookie, then the console."""
        if self.token is None or self._session is None:
            return RedirectResponse("/", status_code=303)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = (query.get("token") or [""])[0]
        if not given or not _same(given, self.token):
            return error_response(401, "wrong or missing token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, self._session, httponly=True, samesite="strict", path="/",
                            secure=scope.get("scheme") == "https")  # fmt: skip
        return response


def _hostname(headers: Headers) -> str:
    """The name a request was addressed to (``Host`` without its port), "" if none."""
    try:
        return (urlsplit("//" + headers.get("host", "")).hostname or "").lower()
    except ValueError:
        return ""


def _with_security_headers(send: Send) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = list(message.get("headers", []))
            present = {name.lower() for name, _ in raw}
            raw += [(n.encode(), v.encode()) for n, v in SECURITY_HEADERS
                    if n.encode() not in present]  # fmt: skip
            if b"cache-control" not in present:
                raw.append((b"cache-control", b"no-store"))
            message["headers"] = raw
        await send(message)

    return secured

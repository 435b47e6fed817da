"""The ASGI application: routes, sessions, CSRF, security headers, templates.

    app = create_app("sqlite:///kvitto.db", secret=os.urandom(32))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # `kvitto serve` does this

Middleware from the outside in: security headers (CSP without inline script, frame-ancestors
'none', no caching of pages), per-address rate limits on the login and the door's public routes
(kvitto.web.throttle), asgi-csrf (a signed double-submit token on every POST, the login
included), Starlette's SessionMiddleware (an itsdangerous-signed, HttpOnly, SameSite=Strict
cookie holding only the server-side session's random id and the language; Secure behind TLS).
Pages are in kvitto.web.pages; each reaches data only through a kvitto.web.scope.Scope.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvitto.store.db import Store, open_store
from kvitto.web.settings import CSRF_COOKIE, HERE, SESSION_COOKIE, Settings, templates
from kvitto.web.throttle import Limits, Throttle

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "create_app"]

DEFAULT_LIMITS = Limits()

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """Headers on every response (ASVS V14.4): CSP, no framing, no sniffing, no referrer;
    pages are not cached (they carry personal-data-free but private verdicts)."""

    def __init__(self, app: ASGIApp, secure: bool):
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not scope["path"].startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                if self.secure:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class _EveryPath:
    """asgi-csrf skips the check for a request without cookies unless its path is in
    `always_protect`: every path is, so a cookieless login POST is refused too."""

    def __contains__(self, path: object) -> bool:
        return True


def create_app(
    store_url: str | Store,
    *,
    secret: bytes | str | None = None,
    clock: Callable[[], datetime] | None = None,
    secure: bool = False,
    live_interval_s: float = 1.0,
    limits: Limits | None = DEFAULT_LIMITS,
) -> Starlette:
    """The application on one store. `secret` signs session and CSRF cookies (random per
    process when None: everyone logs in again after a restart). `secure`: TLS in front (the
    reverse proxy), so cookies get Secure and responses HSTS. `limits`: per-address rate limits
    on the login and the door's public routes (kvitto.web.throttle); None turns them off."""
    from kvitto.web.door import routes as door_routes
    from kvitto.web.door_away import routes as away_routes
    from kvitto.web.pages import not_found, routes

    store = open_store(store_url) if isinstance(store_url, str) else store_url
    key = secret if secret is not None else os.urandom(32)
    key_text = key.hex() if isinstance(key, bytes) else key
    settings = Settings(
        store=store,
        clock=clock or (lambda: datetime.now(timezone.utc)),
        secure=secure,
        templates=templates(),
        live_interval_s=live_interval_s,
    )
    app = Starlette(
        routes=[
            *routes(),
            *door_routes(),
            *away_routes(),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={404: not_found, 405: not_found},
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=key_text,
                session_cookie=SESSION_COOKIE,
                max_age=None,  # a browser-session cookie; the idle timeout is server-side
                same_site="strict",
                https_only=secure,
            )
        ],
    )
    app.state.settings = settings
    protected = asgi_csrf(
        app,
        signing_secret=key_text,
        cookie_name=CSRF_COOKIE,
        cookie_samesite="Strict",
        cookie_secure=secure,
        always_protect=_EveryPath(),  # pyright: ignore[reportArgumentType]
    )
    throttled = Throttle(protected, limits) if limits is not None else protected
    outer: Any = SecurityHeaders(throttled, secure)
    outer.state = app.state  # tests and `kvitto serve` reach the settings here
    outer.inner = app
    return outer


def app_from_environment() -> Any:
    """The application as `kvitto serve --workers N` starts it in each worker process:
    KVITTO_WEB_STORE, KVITTO_WEB_SECRET (the same in every worker) and KVITTO_WEB_SECURE."""
    return create_app(
        os.environ["KVITTO_WEB_STORE"],
        secret=os.environ["KVITTO_WEB_SECRET"],
        secure=os.environ.get("KVITTO_WEB_SECURE") == "1",
    )

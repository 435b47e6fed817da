"""Per-client rate limits on the routes anyone can reach without a session (ASVS V2.2.1, V11.1.4).

    app = Throttle(app, Limits(login="30/minute", public="120/minute"))

The login form (POST) and the staff phone's routes at the door (`/t/…`, `/telefon/…`,
`/borta`) answer without a logged-in user, so a guessing script is slowed per client address
here, before the request reaches CSRF, the session or the store. Counting is the `limits`
library's moving window in this process's memory: with `kvitto serve --workers N` each worker
counts on its own (N times the limit at most), and behind the reverse proxy (`kvitto serve
--behind-tls`) the address is the one uvicorn takes from its X-Forwarded-For. The per-name login
lock-out in kvitto.web.accounts stays: this limit is per address, that one per user name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Limits", "Throttle"]

PUBLIC_PREFIXES = ("/t/", "/telefon/", "/borta")


@dataclass(frozen=True)
class Limits:
    """`limits` rate strings per client address: login POSTs, and the door's public routes."""

    login: str = "30/minute"
    public: str = "120/minute"


PAGE = (
    '<!doctype html><html lang="sv"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>För många försök</title></head><body><main><h1>För många försök</h1>"
    "<p>Vänta en minut och försök sedan igen.</p>"
    '<p lang="en">Too many attempts: wait a minute, then try again.</p></main></body></html>'
)


class Throttle:
    """ASGI middleware: 429 with Retry-After once a client address passes its limit."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app = app
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.login = parse(limits.login)
        self.public = parse(limits.public)

    def _limit_for(self, scope: Scope):  # noqa: ANN202 (a limits.RateLimitItem or None)
        path = scope["path"]
        if path == "/login" and scope["method"] == "POST":
            return self.login
        if path.startswith(PUBLIC_PREFIXES):
            return self.public
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit_for(scope) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        group = "login" if limit is self.login else "public"
        if self.limiter.hit(limit, group, client[0]):
            await self.app(scope, receive, send)
            return
        reset = self.limiter.get_window_stats(limit, group, client[0]).reset_time
        wait = max(1, int(reset - time.time()) + 1)
        body = PAGE.encode()
        await send({
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(wait).encode()),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})

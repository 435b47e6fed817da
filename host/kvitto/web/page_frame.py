"""What every page shares: the role check and the Scope around a handler, rendering, redirects.

    @page("coordinator")                       # the session's user (or /login), 404 for other
    def handler(request, scope[, form]): ...  # roles, a Scope for the user, NotFound as 404
    render(request, "x.html", user, **ctx)     # a template with the language, CSRF token, nav
    back("/avvikelser", month="2026-11")       # post/redirect/get

The pages themselves are kvitto.web.pages (and kvitto.web.door for the staff phones).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
)

from kvitto.verify.reasons import said
from kvitto.verify.rules import available_profiles, load_profile
from kvitto.web.accounts import (
    User,
    session_user,
)
from kvitto.web.deadlines import REASON_CODES, describe_left
from kvitto.web.i18n import (
    DEFAULT,
    LANGUAGES,
    catalogue,
    format_moment,
    format_number,
    format_share,
)
from kvitto.web.scope import DAY_PAGE, PAGE, Scope
from kvitto.web.settings import Settings
from kvitto.web.visibility import NotFound, ms

HOME = {"coordinator": "/avvikelser", "auditor": "/uppfoljning", "admin": "/admin"}


NAV = {
    "coordinator": [
        ("/dag", "Dagsöversikt"),
        ("/avvikelser", "Avvikelser"),
        ("/manad", "Månad"),
        ("/telefoner", "Telefoner"),
        ("/enheter", "Enheter"),
    ],
    "auditor": [("/uppfoljning", "Uppföljning"), ("/logg", "Logg")],
    "admin": [("/admin", "Användare och register"), ("/enheter", "Enheter"), ("/logg", "Logg")],
}


ROLES = {"coordinator": "samordnare", "auditor": "uppföljare", "admin": "administratör"}
# a device event's type as the pages name it (Swedish; the English catalogue translates them)
EVENT_LABELS = {
    "arrive": "ankomst", "depart": "avgång", "unlock": "upplåst", "lock": "låst",
    "deny": "nekad", "alarm_call": "larmsamtal", "alarm_checkin": "larm: incheckning",
    "alarm_checkout": "larm: utcheckning", "door_open": "dörren öppnad",
    "door_close": "dörren stängd", "tamper": "sabotagelarm", "tag_read": "taggläsning",
    "boot": "omstart", "clock_sync": "klockan ställd", "health": "hälsorapport",
}  # fmt: skip


@functools.cache
def activity_names() -> dict[str, str]:
    """Activity code → its name as the municipality's profile writes it (Swedish), over every
    built-in profile: the codes mean the same wherever two profiles share them."""
    names: dict[str, str] = {}
    for profile in available_profiles():
        for code, activity in load_profile(profile).activities.items():
            names.setdefault(code, activity.name)
    return names


KIND_LABELS = {
    "login": "inloggning", "logout": "utloggning", "explain": "förklaring", "correct": "rättelse",
    "register": "efterregistrering", "withdraw": "återkallelse", "attest": "attest",
    "decide": "beslut", "export": "export", "user_add": "ny användare",
    "lock_window": "låset öppnat för besök",
    "accept": "godkänd", "reject": "avslagen",
}  # fmt: skip


OUTCOMES = {"reject": "Avvisas", "adjust": "Justeras", "follow_up": "Följs upp"}


Handler = Callable[..., Any]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def language(request: Request) -> str:
    lang = request.session.get("lang", DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


def render(
    request: Request, template: str, user: User | None, status: int = 200, **context: Any
) -> HTMLResponse:
    settings = settings_of(request)
    lang = language(request)
    gettext = catalogue(lang).gettext
    token = request.scope.get("csrftoken")
    now = settings.clock()
    page = settings.templates.get_template(template).render(
        request=request,
        user=user,
        lang=lang,
        _=gettext,
        csrf=token() if token else "",
        nav=NAV.get(user.role, []) if user else [],
        path=request.url.path,
        when=lambda m, p="d MMM y HH:mm": format_moment(m, lang, p),
        when_ms=lambda v: format_moment(datetime.fromtimestamp(v / 1000, timezone.utc), lang),
        number=lambda v: format_number(v, lang),
        share=lambda v: format_share(v, lang),
        left=lambda m: _left(m, now, gettext),
        outcomes=OUTCOMES,
        page_size=DAY_PAGE if template.startswith("day") else PAGE,
        roles=ROLES,
        kinds=KIND_LABELS,
        activity=lambda code: activity_names().get(code, code),
        event=lambda kind: gettext(EVENT_LABELS[kind]) if kind in EVENT_LABELS else kind,
        reasons=REASON_CODES,
        said=lambda stored: said(stored, lang),  # a verdict's reason in the page's language
        now=now,
        **context,
    )
    return HTMLResponse(page, status_code=status)


def _left(moment: datetime | None, now: datetime, gettext: Callable[[str], str]) -> str:
    if moment is None:
        return "–"
    weekdays, hours = describe_left(moment, now)
    if moment <= now:
        return gettext("passerad")
    if weekdays == 1:
        return gettext("%(d)s vardag %(h)s h") % {"d": weekdays, "h": hours}
    return gettext("%(d)s vardagar %(h)s h") % {"d": weekdays, "h": hours}


def current_user(request: Request) -> User | None:
    settings = settings_of(request)
    return session_user(settings.store, request.session.get("sid", ""), ms(settings.clock()))


def page(*roles: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            form = await request.form() if request.method == "POST" else None

            def run() -> Response:
                settings = settings_of(request)
                user = current_user(request)
                if user is None:
                    request.session.pop("sid", None)
                    target = "/login?next=" + quote(request.url.path, safe="/")
                    return RedirectResponse(target, status_code=303)
                if roles and user.role not in roles:
                    raise HTTPException(404)
                scope = Scope(settings.store, user, settings.clock())
                try:
                    if form is not None:
                        return handler(request, scope, form)
                    return handler(request, scope)
                except NotFound:
                    raise HTTPException(404) from None

            return await run_in_threadpool(run)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def back(path: str, **query: str) -> RedirectResponse:
    if query:
        path += "?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())
    return RedirectResponse(path, status_code=303)


def _safe_next(target: str | None) -> str | None:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None

"""The pages: one function per page or action, each given a Scope (kvitto.web.scope).

    routes()    # the Starlette routes, Swedish paths: /dag, /avvikelser, /manad, /uppfoljning, /logg

`page(*roles)` (kvitto.web.page_frame, with `render` and `back`) wraps a handler: it finds the
session's user (or sends the browser to /login), refuses other roles with 404, builds the
Scope every read and write goes through, and turns NotFound into 404. A POST handler answers with a redirect (post/redirect/get), or with the
form again and the reason when the action is refused.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import tempfile
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from kvitto.web import records as chain
from kvitto.web.accounts import (
    Throttled,
    User,
    authenticate,
    end_session,
    start_session,
)
from kvitto.web.door_bundle import door_lines
from kvitto.web.i18n import (
    DEFAULT,
    LANGUAGES,
)
from kvitto.web.lock_access import GRANT_REFUSALS
from kvitto.web.page_frame import (
    HOME,
    Handler,
    _safe_next,
    back,
    current_user,
    page,
    render,
    settings_of,
)
from kvitto.web.scope import Scope
from kvitto.web.settings import Settings
from kvitto.web.visibility import Refused, local_day, ms

# -- login, logout, language -----------------------------------------------------------------


async def login(request: Request) -> Response:
    form = await request.form() if request.method == "POST" else None

    def run() -> Response:
        settings = settings_of(request)
        if form is None:
            return render(request, "login.html", None, next=request.query_params.get("next", ""))
        name = str(form.get("name", "")).strip().lower()
        password = str(form.get("password", ""))
        now = settings.clock()
        error = ""
        try:
            user = authenticate(settings.store, name, password, ms(now))
        except Throttled:
            user, error = None, "throttled"
        if user is None:
            return render(request, "login.html", None, status=401 if not error else 429,
                          error=error or "wrong", next=form.get("next", ""))  # fmt: skip
        # A new session id at every login (no fixation): end whatever session came along.
        end_session(settings.store, request.session.get("sid", ""))
        lang = request.session.get("lang", DEFAULT)
        request.session.clear()
        request.session["sid"] = start_session(settings.store, user, ms(now))
        request.session["lang"] = lang
        _log_login(settings, user, "login", now)
        return back(_safe_next(str(form.get("next", ""))) or HOME[user.role])

    return await run_in_threadpool(run)


def _log_login(settings: Settings, user: User, kind: str, now: datetime) -> None:
    if user.role == "coordinator":
        target = user.provider
    elif user.role == "auditor":
        target = f"m:{user.municipality}"
    else:
        target = "admin"
    chain.append(settings.store, chain=target, actor=user.name, kind=kind, at=ms(now),
                 body={"role": user.role}, provider=user.provider,
                 municipality=user.municipality)  # fmt: skip


@page()
def logout(request: Request, scope: Scope, form: FormData) -> Response:
    settings = settings_of(request)
    _log_login(settings, scope.user, "logout", scope.now)
    end_session(settings.store, request.session.get("sid", ""))
    request.session.clear()
    return back("/login")


async def set_language(request: Request) -> Response:
    lang = request.path_params["lang"]
    if lang not in LANGUAGES:
        raise HTTPException(404)
    request.session["lang"] = lang
    return back(_safe_next(request.query_params.get("next")) or "/")


async def home(request: Request) -> Response:
    user = await run_in_threadpool(current_user, request)
    return back(HOME[user.role] if user else "/login")


# -- coordinator: deviation queue and one claim ---------------------------------------------


@page("coordinator")
def deviations(request: Request, scope: Scope) -> Response:
    offset = _int(request.query_params.get("fran"), 0)
    rows, total = scope.queue(offset)
    return render(request, "deviations.html", scope.user, rows=rows, total=total, offset=offset,
                  months=scope.open_months(scope.own))  # fmt: skip


def _int(text: str | None, default: int) -> int:
    try:
        return max(0, int(text or default))
    except ValueError:
        return default


def _claim_page(request: Request, scope: Scope, claim_id: str, provider: str, **extra: Any):
    month, claim, row = scope.claim(provider, claim_id)
    findings = scope.findings(provider, month, claim.customer)
    own = [f for f in findings if f.claim_id == claim_id]
    start, end = claim.start - timedelta(hours=2), claim.end + timedelta(hours=2)
    events = scope.evidence(claim.customer, start, end)
    profile = scope.profile(provider)
    return render(
        request, "claim.html", scope.user, status=extra.pop("status", 200), provider=provider,
        month=month, claim=claim, row=row, findings=own, events=events,
        history=scope.history(provider, claim_id), activities=profile.activities,
        deadline=_deadline(scope, provider, claim, month),
        door=scope.door_evidence(provider, claim_id), **extra,
    )  # fmt: skip


def _deadline(scope: Scope, provider: str, claim: Any, month: str) -> Any:
    from kvitto.web.deadlines import nearest

    return nearest(scope.profile(provider), claim, month, scope.now)


@page("coordinator")
def claim_page(request: Request, scope: Scope) -> Response:
    return _claim_page(request, scope, request.path_params["claim_id"], scope.own)


REFUSALS = {
    "personnummer": "Texten innehåller ett personnummer. Skriv utan personuppgifter.",
    "reason_code": "Välj en orsak.",
    "reason_missing": "Skriv ett skäl.",
    "activity": "Insatsen finns inte i kommunens lista.",
    "no_change": "Inget ändrades.",
    "decision": "Välj godkänn eller avslå.",
}


def _refusal(error: Refused) -> str:
    return REFUSALS.get(str(error), str(error))


def _claim_action(kind: str) -> Handler:
    def action(request: Request, scope: Scope, form: FormData) -> Response:
        claim_id = request.path_params["claim_id"]
        scope.claim(scope.own, claim_id)  # 404 before anything else for a foreign id
        reason, text = str(form.get("reason_code", "")), str(form.get("text", ""))
        try:
            if kind == "explain":
                scope.explain(claim_id, reason, text)
            elif kind == "withdraw":
                scope.withdraw(claim_id, reason, text)
                return back("/avvikelser", klart="aterkallad")
            else:
                changes = {k: str(form.get(k, "")) for k in ("start", "end", "activity")}
                scope.correct(claim_id, reason, text, changes)
        except Refused as error:
            return _claim_page(request, scope, claim_id, scope.own, status=400,
                               error=_refusal(error), form=dict(form), action=kind)  # fmt: skip
        return back(f"/avvikelser/{quote(claim_id)}", klart=kind)

    action.__name__ = f"claim_{kind}"
    return page("coordinator")(action)


# -- coordinator: the month -------------------------------------------------------------------


@page("coordinator")
def months(request: Request, scope: Scope) -> Response:
    found = scope.months(scope.own)
    if found:
        return back(f"/manad/{found[0]}")
    return render(request, "month.html", scope.user, month=None, months=[], summary=None)


@page("coordinator")
def month_page(request: Request, scope: Scope) -> Response:
    provider = scope.own
    month = scope.month(provider, request.path_params["month"])
    profile = scope.profile(provider)
    return render(request, "month.html", scope.user, month=month, months=scope.months(provider),
                  summary=scope.summary(provider, month),
                  activities=profile.activities, provider=provider)  # fmt: skip


@page("coordinator")
def attest(request: Request, scope: Scope, form: FormData) -> Response:
    month = scope.month(scope.own, request.path_params["month"])
    try:
        scope.attest(month, str(form.get("text", "")))
    except Refused as error:
        return back(f"/manad/{month}", fel=_refusal(error))
    return back(f"/manad/{month}", klart="attest")


@page("coordinator")
def register(request: Request, scope: Scope, form: FormData) -> Response:
    month = scope.month(scope.own, request.path_params["month"])
    try:
        record = scope.register(
            str(form.get("customer", "")), str(form.get("activity", "")),
            str(form.get("start", "")), str(form.get("end", "")), str(form.get("staff", "")),
            str(form.get("reason_code", "")), str(form.get("text", "")),
        )  # fmt: skip
    except Refused as error:
        return back(f"/manad/{month}", fel=_refusal(error))
    return back(f"/avvikelser/{quote(record.claim_id)}", klart="register")


def _billing_response(scope: Scope, provider: str, month: str, kind: str) -> Response:
    rows = scope.billing(provider, month)
    scope.log_export(provider, month, f"billing.{kind}")
    name = f"underlag-{provider}-{month}.{kind}"
    disposition = {"content-disposition": f'attachment; filename="{name}"'}
    if kind == "json":
        body = json.dumps({"provider": provider, "month": month, "billing": rows},
                          ensure_ascii=False, indent=1)  # fmt: skip
        return Response(body, media_type="application/json", headers=disposition)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["customer", "category", "payable_minutes", "count"],
                            lineterminator="\n")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=disposition)


@page("coordinator", "auditor")
def billing_export(request: Request, scope: Scope) -> Response:
    provider = request.path_params.get("provider") or scope.own
    month = scope.month(scope.provider(provider), request.path_params["month"])
    kind = request.path_params["kind"]
    if kind not in ("csv", "json"):
        raise HTTPException(404)
    return _billing_response(scope, provider, month, kind)


@page("coordinator", "auditor")
def case_export(request: Request, scope: Scope) -> Response:
    """The case bundle (FORMATS.md §3) with the records (docs/formats.md: records.jsonl)."""
    from kvitto.verify.export import export_case

    provider = request.path_params.get("provider") or scope.own
    month = scope.month(scope.provider(provider), request.path_params["month"])
    work = Path(tempfile.mkdtemp(prefix="kvitto-case-"))
    try:
        (work / "in").mkdir()
        claims = work / "in" / "claims.csv"
        claims.write_text(scope.claims_csv(provider, month), encoding="utf-8")
        customers = {str(r[0]) for r in scope.store.execute(
            "SELECT customer FROM customer_providers WHERE provider = ?", (provider,))}  # fmt: skip
        orders = work / "in" / "orders.csv"
        from kvitto.store.registry import Registry

        lines = ["customer,activity,granted_minutes_month,valid_from,valid_to,double_staffing,"
                 "tag_exempt"]  # fmt: skip
        for order in Registry(scope.store).orders():
            if order.customer in customers:
                lines.append(f"{order.customer},{order.activity},{order.granted_minutes_month},"
                             f"{order.valid_from},{order.valid_to or ''},"
                             f"{int(bool(order.double_staffing))},{int(bool(order.tag_exempt))}")  # fmt: skip
        orders.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = work / "case"
        export_case(scope.store, month, out, provider=provider, claims=claims, orders=orders)
        scope.log_export(provider, month, "case")
        month_records = [r for r in chain.records(scope.store, chains=[provider])]
        (out / "records.jsonl").write_text(
            "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in month_records),
            encoding="utf-8",
        )
        door = door_lines(scope.store, provider, month)
        if door:  # staff phones at the door (docs/formats.md, door.jsonl v1)
            (out / "door.jsonl").write_text(door, encoding="utf-8")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    archive.write(path, f"case-{provider}-{month}/{path.relative_to(out)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = f"arende-{provider}-{month}.zip"
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="{name}"'})  # fmt: skip


# -- coordinator: the day board ---------------------------------------------------------------


@page("coordinator")
def day_board(request: Request, scope: Scope) -> Response:
    day = local_day(request.query_params.get("dag"), scope.now)
    after = request.query_params.get("efter", "")
    board = scope.day(day, after)
    return render(request, "day.html", scope.user, day=day, board=board,
                  stamp=scope.last_event(), opened=request.query_params.get("oppnat", ""),
                  refused=GRANT_REFUSALS.get(request.query_params.get("fel", ""), ""),
                  day_start=datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc))  # fmt: skip


async def day_live(request: Request) -> Response:
    """Server-sent events: `changed` whenever a new event of the provider's devices is stored
    (the page then reloads its board); polls the store every live interval."""
    settings = settings_of(request)
    user = await run_in_threadpool(current_user, request)
    if user is None or user.role != "coordinator":
        raise HTTPException(404)
    scope = Scope(settings.store, user, settings.clock())
    since = _int(request.query_params.get("sedan"), 0)

    async def stream():
        last = since
        yield "retry: 2000\n\n"
        for _ in range(int(600 / settings.live_interval_s)):
            if await request.is_disconnected():
                return
            newest = await run_in_threadpool(scope.last_event, last)
            if newest > last:
                last = newest
                yield f"event: changed\ndata: {newest}\n\n"
            await asyncio.sleep(settings.live_interval_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store"})  # fmt: skip


@page("coordinator")
def lock_window(request: Request, scope: Scope, form: FormData) -> Response:
    """A one-off window on a customer's lock for an unplanned visit (issue #23)."""
    from kvitto.web.lock_access import grant

    customer = str(form.get("customer", ""))
    try:
        grant(scope, customer, str(form.get("start", "")), _int(str(form.get("minutes", "")), 0),
              str(form.get("text", "")))  # fmt: skip
    except Refused as error:
        code = str(error)
        return back("/dag", fel=code if code in GRANT_REFUSALS else "time", kund=customer)
    return back("/dag", oppnat=customer)


@page("coordinator")
def day_fragment(request: Request, scope: Scope) -> Response:
    day = local_day(request.query_params.get("dag"), scope.now)
    after = request.query_params.get("efter", "")
    return render(request, "day_board.html", scope.user, day=day,
                  board=scope.day(day, after))  # fmt: skip


# -- auditor ----------------------------------------------------------------------------------


@page("auditor")
def overview(request: Request, scope: Scope) -> Response:
    months = sorted({m for p in scope.providers for m in scope.months(p)}, reverse=True)
    month = request.query_params.get("manad") or (months[0] if months else "")
    if month and month not in months:
        raise HTTPException(404)
    providers = []
    for provider in scope.providers:
        if month in scope.months(provider):
            providers.append((provider, scope.summary(provider, month),
                              scope.follow_ups(provider, month)))  # fmt: skip
    return render(request, "overview.html", scope.user, month=month, months=months,
                  providers=providers)  # fmt: skip


@page("auditor")
def provider_month(request: Request, scope: Scope) -> Response:
    provider = scope.provider(request.path_params["provider"])
    month = scope.month(provider, request.path_params["month"])
    return render(request, "provider_month.html", scope.user, provider=provider, month=month,
                  summary=scope.summary(provider, month),
                  findings=scope.findings(provider, month)[:500])  # fmt: skip


@page("auditor")
def decide(request: Request, scope: Scope, form: FormData) -> Response:
    provider = scope.provider(request.path_params["provider"])
    claim_id = request.path_params["claim_id"]
    scope.claim(provider, claim_id)
    try:
        scope.decide(provider, claim_id, str(form.get("rule", "")),
                     str(form.get("decision", "")), str(form.get("text", "")))  # fmt: skip
    except Refused as error:
        return _visit_page(request, scope, provider, claim_id, status=400,
                           error=_refusal(error), form=dict(form))  # fmt: skip
    return back(f"/besok/{quote(provider)}/{quote(claim_id)}", klart="beslut")


def _visit_page(request: Request, scope: Scope, provider: str, claim_id: str, **extra: Any):
    month, claim, row = scope.claim(provider, claim_id)
    findings = [f for f in scope.findings(provider, month, claim.customer)
                if f.claim_id == claim_id]  # fmt: skip
    events = scope.evidence(claim.customer, claim.start - timedelta(hours=2),
                            claim.end + timedelta(hours=2))  # fmt: skip
    return render(request, "visit.html", scope.user, status=extra.pop("status", 200),
                  provider=provider, month=month, claim=claim, row=row, findings=findings,
                  events=events, history=scope.history(provider, claim_id),
                  door=scope.door_evidence(provider, claim_id), **extra)  # fmt: skip


@page("coordinator", "auditor")
def visit(request: Request, scope: Scope) -> Response:
    provider = scope.provider(request.path_params["provider"])
    return _visit_page(request, scope, provider, request.path_params["claim_id"])


# -- the audit log and admin -----------------------------------------------------------------


@page("auditor", "admin")
def audit_log(request: Request, scope: Scope) -> Response:
    offset = _int(request.query_params.get("fran"), 0)
    entries, problems = scope.log(offset)
    return render(request, "log.html", scope.user, entries=entries, problems=problems,
                  offset=offset)  # fmt: skip


@page("admin")
def admin(request: Request, scope: Scope) -> Response:
    from kvitto.web.accounts import users

    store = scope.store
    registry = store.execute(
        "SELECT p.id, p.municipality, COUNT(c.customer) FROM providers p LEFT JOIN "
        "customer_providers c ON c.provider = p.id GROUP BY p.id, p.municipality ORDER BY p.id"
    )
    counts = {
        "customers": int(store.execute("SELECT COUNT(*) FROM customers")[0][0]),
        "devices": int(store.execute("SELECT COUNT(*) FROM devices")[0][0]),
        "credentials": int(store.execute("SELECT COUNT(*) FROM credentials")[0][0]),
        "events": int(store.execute("SELECT COUNT(*) FROM events")[0][0]),
    }
    return render(request, "admin.html", scope.user, users=users(store), providers=registry,
                  counts=counts)  # fmt: skip


@page("admin", "coordinator")
def devices(request: Request, scope: Scope) -> Response:
    """Enheter: the door devices from their signed health reports, alerts first (issue #22;
    the same data as `kvitto fleet`, kvitto.fleet.status): an admin's every device, a
    coordinator's those at the provider's customers (Visibility.devices)."""
    from kvitto.fleet.status import versions

    now_ms = int(scope.now.timestamp() * 1000)
    rows = scope.devices(now_ms)
    rows.sort(key=lambda d: (not d.alerts, d.device))
    return render(request, "devices.html", scope.user, devices=rows, versions=versions(rows),
                  alerting=sum(1 for d in rows if d.alerts))  # fmt: skip


async def metrics(request: Request) -> Response:
    """The fleet as a Prometheus exposition (kvitto.fleet.status.prometheus), for a scraper
    holding `Authorization: Bearer $KVITTO_METRICS_TOKEN`; without that token set, or with
    another, there is no such page (404)."""
    import hmac
    import os

    token = os.environ.get("KVITTO_METRICS_TOKEN", "")
    given = request.headers.get("authorization", "")
    if len(token) < 16 or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise HTTPException(404)
    settings = settings_of(request)

    def exposition() -> str:
        from kvitto.fleet.status import fleet_status, prometheus

        now_ms = int(settings.clock().timestamp() * 1000)
        return prometheus(fleet_status(settings.store, now_ms), now_ms)

    text = await run_in_threadpool(exposition)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def not_found(request: Request, exc: Exception) -> Response:
    user = await run_in_threadpool(current_user, request)
    code = getattr(exc, "status_code", 404)
    return render(request, "error.html", user, status=code, code=code)


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/sprak/{lang}", set_language),
        Route("/avvikelser", deviations),
        Route("/avvikelser/{claim_id}", claim_page),
        Route("/avvikelser/{claim_id}/forklara", _claim_action("explain"), methods=["POST"]),
        Route("/avvikelser/{claim_id}/ratta", _claim_action("correct"), methods=["POST"]),
        Route("/avvikelser/{claim_id}/aterkalla", _claim_action("withdraw"), methods=["POST"]),
        Route("/manad", months),
        Route("/manad/{month}", month_page),
        Route("/manad/{month}/attestera", attest, methods=["POST"]),
        Route("/manad/{month}/efterregistrera", register, methods=["POST"]),
        Route("/manad/{month}/underlag.{kind}", billing_export),
        Route("/manad/{month}/arende.zip", case_export),
        Route("/dag", day_board),
        Route("/dag/tavla", day_fragment),
        Route("/dag/live", day_live),
        Route("/dag/lasfonster", lock_window, methods=["POST"]),
        Route("/uppfoljning", overview),
        Route("/uppfoljning/{provider}/{month}", provider_month),
        Route("/uppfoljning/{provider}/{month}/underlag.{kind}", billing_export),
        Route("/uppfoljning/{provider}/{month}/arende.zip", case_export),
        Route("/besok/{provider}/{claim_id}", visit),
        Route("/besok/{provider}/{claim_id}/beslut", decide, methods=["POST"]),
        Route("/logg", audit_log),
        Route("/admin", admin),
        Route("/enheter", devices),
        Route("/metrics", metrics),
    ]

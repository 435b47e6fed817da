"""Staff phones without an app (issue #20): enrol a passkey, open the door's URL, confirm.

    routes()   # /telefoner (coordinator), /telefon/{token} (enrolment), /t/… (at the door)

A coordinator makes a one-time enrolment link (15 minutes, a QR code); opened on the
provider's phone it registers a passkey (WebAuthn, resident key, user verification required;
py_webauthn checks it), which becomes a `phone` credential of that provider in the registry
(key material: the passkey's COSE public key; id: kvitto.evidence.door.passkey_credential_id).

At the door the phone reads the door's NDEF URL natively and its browser opens it here: a
device in tag mode (`/t/DEVICE?c=&t=&s=`, Ed25519) or a passive NTAG 424 DNA sticker
(`/t/s/STICKER?e=&c=`, SUN). The URL must verify, its counter must be above every counter seen
for that door, and a device's time within TOLERANCE_S of ours. The page then asks for the
passkey, whose challenge is bound to the URL (kvitto.evidence.door.door_challenge). An
assertion by a phone of the customer's provider is an arrive, or a depart when that phone's
arrive at this customer is open; at depart the staff tick the activities performed and each
becomes a claim registered at the door (a `register` record with `via: door` and its proofs).
Everything refused is a page that says why and a row in `quarantine`.

Staff have no login: the enrolment link and the passkey ceremony are their authentication,
every POST carries the CSRF token of the page it came from, and the activities form is
accepted only in the browser session that confirmed the depart, within DOOR_SESSION_S.

The checks of a read and its confirmation live in kvitto.web.door_reads; this module holds the
pages and routes around them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kvitto.evidence.door import (
    b64url,
    door_challenge,
    passkey_credential_id,
)
from kvitto.store.db import QuarantineRow, Store
from kvitto.store.registry import PSEUDONYM, Registry
from kvitto.verify.door_proofs import door_time
from kvitto.verify.workdays import STOCKHOLM
from kvitto.web import records as chain
from kvitto.web.door_reads import (
    REFUSALS,
    DoorRefused,
    confirm_read,
    read_device,
    read_sticker,
    store_read,
)
from kvitto.web.judge import judge_stale
from kvitto.web.page_frame import back, page, render, settings_of
from kvitto.web.personnummer import find_personnummer
from kvitto.web.scope import Scope
from kvitto.web.visibility import ms

ENROL_S = 15 * 60  # an enrolment link is valid this long
DOOR_SESSION_S = 15 * 60  # from the depart to ticking the activities


def now_of(request: Request) -> datetime:
    return settings_of(request).clock()


def relying_party(request: Request) -> tuple[str, str]:
    """(RP id, origin) of this server as the browser sees it: WebAuthn binds a passkey to the
    host name and an assertion to the origin (a secure context: https, or http://localhost)."""
    url = request.url
    origin = f"{url.scheme}://{url.netloc}"
    return url.hostname or "localhost", origin


def _quarantine(store: Store, request: Request, refused: DoorRefused, what: str) -> None:
    store.quarantine([QuarantineRow(
        received_at=ms(now_of(request)), source=f"door {request.url.path}", device=None, seq=None,
        reason=f"{refused.code}: {refused}", message=what.encode(),
    )])  # fmt: skip


def refuse(
    request: Request, store: Store, refused: DoorRefused, what: str,
    texts: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    """The page that says why (REFUSALS, or `texts` where a page says it otherwise) and the
    attempt quarantined."""
    _quarantine(store, request, refused, what)
    message = (texts or {}).get(refused.code, REFUSALS[refused.code])
    return render(request, "door_refused.html", None, status=403, code=refused.code,
                  message=message, no_lang=True)  # fmt: skip


# -- the coordinator: phones and enrolment links ---------------------------------------------


def phones_of(store: Store, provider: str) -> list[dict[str, Any]]:
    rows = store.execute(
        "SELECT c.id, c.staff, c.revoked, p.enrolled_at FROM credentials c "
        "JOIN passkeys p ON p.credential = c.id WHERE c.provider = ? AND c.kind = 'phone' "
        "ORDER BY c.staff, c.id",
        (provider,),
    )
    return [{"id": str(r[0]), "staff": str(r[1]), "revoked": str(r[2]),
             "enrolled_at": int(r[3])} for r in rows]  # fmt: skip


@page("coordinator")
def phones(request: Request, scope: Scope) -> Response:
    return render(request, "phones.html", scope.user, phones=phones_of(scope.store, scope.own),
                  done=request.query_params.get("klart", ""))  # fmt: skip


def create_enrolment(store: Store, provider: str, staff: str, actor: str, now_ms: int) -> str:
    """A one-time enrolment token for `staff` of `provider`, valid ENROL_S (its hash kept)."""
    token = secrets.token_urlsafe(24)
    store.execute(
        "INSERT INTO enrolments (token_hash, provider, staff, created_by, created_at, "
        "expires_at, challenge, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        (_hash(token), provider, staff, actor, now_ms, now_ms + ENROL_S * 1000,
         secrets.token_bytes(32)),
    )  # fmt: skip
    return token


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@page("coordinator")
def new_link(request: Request, scope: Scope, form: FormData) -> Response:
    import segno

    staff = str(form.get("staff", "")).strip()
    error = ""
    if find_personnummer(staff):
        error = "personnummer"
    elif not PSEUDONYM.fullmatch(staff):
        error = "staff"
    if error:
        return render(request, "phones.html", scope.user, status=400, error=error,
                      phones=phones_of(scope.store, scope.own), form=dict(form))  # fmt: skip
    token = create_enrolment(scope.store, scope.own, staff, scope.user.name, ms(scope.now))
    _, origin = relying_party(request)
    link = f"{origin}/telefon/{token}"
    qr = segno.make(link, error="m").svg_data_uri(scale=5, border=2)
    until = scope.now + timedelta(seconds=ENROL_S)
    return render(request, "phones.html", scope.user, phones=phones_of(scope.store, scope.own),
                  link=link, qr=qr, staff=staff, until=until)  # fmt: skip


@page("coordinator")
def revoke_phone(request: Request, scope: Scope, form: FormData) -> Response:
    credential_id = scope.own_phone(request.path_params["credential"])  # 404 for a foreign one
    # a date, as registry.toml carries it (RULES I6: revoked from that day's start)
    Registry(scope.store).revoke_credential(
        credential_id, scope.now.astimezone(STOCKHOLM).date().isoformat()
    )
    return back("/telefoner", klart="sparrad")


# -- enrolment on the staff's phone ------------------------------------------------------------


def _enrolment(store: Store, token: str, now_ms: int) -> tuple[str, str, bytes] | None:
    rows = store.execute(
        "SELECT provider, staff, challenge, expires_at, used_at FROM enrolments "
        "WHERE token_hash = ?",
        (_hash(token),),
    )
    if not rows or rows[0][4] is not None or int(rows[0][3]) < now_ms:
        return None
    return str(rows[0][0]), str(rows[0][1]), bytes(rows[0][2])


async def enrol(request: Request) -> Response:
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    form = await request.form() if request.method == "POST" else None
    token = request.path_params["token"]

    def run() -> Response:
        store = settings_of(request).store
        now_ms = ms(now_of(request))
        found = _enrolment(store, token, now_ms)
        if found is None:
            return render(request, "enrol.html", None, status=410, gone=True, no_lang=True)
        provider, staff, challenge = found
        rp_id, origin = relying_party(request)
        if form is not None:
            return _finish_enrolment(request, store, token, provider, staff, challenge,
                                     str(form.get("credential", "")), rp_id, origin, now_ms)  # fmt: skip
        options = generate_registration_options(
            rp_id=rp_id, rp_name="kvitto", user_name=staff, user_display_name=staff,
            user_id=hashlib.sha256(f"{provider}/{staff}".encode()).digest()[:16],
            challenge=challenge,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
        )  # fmt: skip
        return render(request, "enrol.html", None, staff=staff, provider=provider,
                      options=options_to_json(options), no_lang=True)  # fmt: skip

    return await run_in_threadpool(run)


def _finish_enrolment(
    request: Request, store: Store, token: str, provider: str, staff: str, challenge: bytes,
    answer: str, rp_id: str, origin: str, now_ms: int,
) -> Response:  # fmt: skip
    from webauthn import verify_registration_response

    try:
        verified = verify_registration_response(
            credential=answer, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origin, require_user_verification=True,
        )  # fmt: skip
    except Exception as error:  # py_webauthn: InvalidRegistrationResponse, malformed JSON, …
        refused = DoorRefused("bad_assertion", f"enrolment of {staff} ({provider}): {error}")
        _quarantine(store, request, refused, answer[:2000])
        return render(request, "enrol.html", None, status=400, staff=staff, provider=provider,
                      error=True, no_lang=True)  # fmt: skip
    key = bytes(verified.credential_public_key)
    credential_id = passkey_credential_id(key)
    with store.transaction():
        used = store.execute(
            "SELECT used_at FROM enrolments WHERE token_hash = ?", (_hash(token),)
        )
        if used and used[0][0] is not None:
            return render(request, "enrol.html", None, status=410, gone=True, no_lang=True)
        store.execute("UPDATE enrolments SET used_at = ? WHERE token_hash = ?",
                      (now_ms, _hash(token)))  # fmt: skip
        Registry(store).add_credential(credential_id, staff, provider, "phone", key)
        store.execute(
            "INSERT INTO passkeys (credential, raw_id, public_key, sign_count, enrolled_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (credential_id, b64url(bytes(verified.credential_id)), key,
             int(verified.sign_count), now_ms),
        )  # fmt: skip
    return render(request, "enrol.html", None, staff=staff, provider=provider, done=True,
                  no_lang=True)  # fmt: skip


# -- at the door ----------------------------------------------------------------------------


def _door_url(request: Request) -> str:
    """The URL exactly as the phone opened it (the device signed this text)."""
    url = request.url
    text = f"{url.scheme}://{url.netloc}{url.path}"
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{text}?{query}" if query else text


def _door_page(kind: str) -> Any:
    async def endpoint(request: Request) -> Response:
        from webauthn import generate_authentication_options, options_to_json
        from webauthn.helpers.structs import UserVerificationRequirement

        def run() -> Response:
            store = settings_of(request).store
            url = _door_url(request)
            now = now_of(request)
            door = request.path_params["door"]
            try:
                if kind == "device":
                    read = read_device(store, door, url, now)
                else:
                    read = read_sticker(store, door, url, now)
                read_id = store_read(store, read, url, now)
            except DoorRefused as refused:
                return refuse(request, store, refused, url)
            rp_id, _ = relying_party(request)
            options = generate_authentication_options(
                rp_id=rp_id, challenge=door_challenge(url),
                user_verification=UserVerificationRequirement.REQUIRED,
            )  # fmt: skip
            return render(request, "door.html", None, read_id=read_id, kind=kind,
                          options=options_to_json(options), no_lang=True)  # fmt: skip

        return await run_in_threadpool(run)

    return endpoint


def activities_for(store: Store, provider: str, customer: str, day: str) -> list[tuple[str, str]]:
    """(code, Swedish name) of the customer's orders valid on `day`, in the profile's order."""
    from kvitto.verify.rules import load_profile

    municipality = store.execute("SELECT municipality FROM providers WHERE id = ?", (provider,))
    profile = load_profile(str(municipality[0][0]))
    ordered = {
        str(r[0])
        for r in store.execute(
            "SELECT activity, valid_from, valid_to FROM orders WHERE customer = ?", (customer,)
        )
        if str(r[1]) <= day and (not r[2] or day <= str(r[2]))
    }
    return [(code, activity.name) for code, activity in profile.activities.items()
            if code in ordered]  # fmt: skip


async def confirm(request: Request) -> Response:
    form = await request.form()

    def run() -> Response:
        store = settings_of(request).store
        now = now_of(request)
        rp_id, origin = relying_party(request)
        read_id = str(form.get("read", ""))
        try:
            result = confirm_read(store, read_id, str(form.get("credential", "")), rp_id,
                                  origin, now)  # fmt: skip
        except DoorRefused as refused:
            return refuse(request, store, refused, str(form.get("credential", ""))[:4000])
        activities: list[tuple[str, str]] = []
        if result["action"] == "depart":
            request.session["door"] = {
                "proof": result["id"],
                "until": ms(now) + DOOR_SESSION_S * 1000,
            }
            day = now.astimezone(STOCKHOLM).date().isoformat()
            activities = activities_for(store, result["provider"], result["customer"], day)
        return render(request, "door_done.html", None, result=result, activities=activities,
                      no_lang=True)  # fmt: skip

    return await run_in_threadpool(run)


def register_activities(
    store: Store, proof_id: int, codes: list[str], now: datetime
) -> list[chain.Record]:
    """The claims of a depart: one per activity ticked, from the arrive to the depart, each a
    `register` record (via door) in the provider's chain with both proofs; then re-judged."""
    rows = store.execute(
        "SELECT provider, customer, credential, at, proof FROM door_proofs WHERE id = ? AND "
        "action = 'depart'",
        (proof_id,),
    )
    if not rows:
        raise HTTPException(404)
    provider, customer, credential_id = str(rows[0][0]), str(rows[0][1]), str(rows[0][2])
    depart_at = int(rows[0][3])
    arrive = store.execute(
        "SELECT id, at, proof FROM door_proofs WHERE credential = ? AND customer = ? AND "
        "action = 'arrive' AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
        (credential_id, customer, depart_at),
    )
    arrive_id = int(arrive[0][0])
    # the times the rules see too (kvitto.verify.door_proofs.door_time): a device's signed
    # time, a sticker's server time
    start = door_time({"at": int(arrive[0][1]), "proof": json.loads(arrive[0][2])})
    end = door_time({"at": depart_at, "proof": json.loads(rows[0][4])})
    start, day = start.astimezone(STOCKHOLM), end.astimezone(STOCKHOLM)
    allowed = {c for c, _ in activities_for(store, provider, customer, day.date().isoformat())}
    chosen = [code for code in dict.fromkeys(codes) if code in allowed]
    if not chosen:
        return []
    credential = Registry(store).credential(credential_id)
    assert credential is not None
    municipality = str(store.execute("SELECT municipality FROM providers WHERE id = ?",
                                     (provider,))[0][0])  # fmt: skip
    month = f"{day:%Y-%m}"
    made = []
    for code in chosen:
        claim_id = f"d-{proof_id}-{code}"
        after = {"activity": code, "staff": credential.staff,
                 "start": start.isoformat(timespec="minutes"),
                 "end": day.isoformat(timespec="minutes")}  # fmt: skip
        made.append(chain.append(
            store, chain=provider, actor=credential.staff, kind="register", at=ms(now),
            body={"via": "door", "proofs": [arrive_id, proof_id], "after": after,
                  "credential": credential_id, "reason_code": "", "text": ""},
            provider=provider, municipality=municipality, customer=customer,
            claim_id=claim_id, month=month,
        ))  # fmt: skip
    judge_stale(store, provider, month, ms(now))
    return made


async def activities(request: Request) -> Response:
    form = await request.form()

    def run() -> Response:
        store = settings_of(request).store
        now = now_of(request)
        held = request.session.get("door") or {}
        text = str(form.get("proof", ""))
        proof_id = int(text) if text.isdigit() else 0
        if held.get("proof") != proof_id or int(held.get("until", 0)) < ms(now):
            refused = DoorRefused("expired", f"activities for door proof {proof_id}: no session")
            return refuse(request, store, refused, json.dumps(dict(form))[:2000])
        made = register_activities(store, proof_id, [str(v) for v in form.getlist("insats")], now)
        request.session.pop("door", None)
        return render(request, "door_done.html", None, registered=made, no_lang=True,
                      result={"action": "registered"})  # fmt: skip

    return await run_in_threadpool(run)


def routes() -> list[Route]:
    return [
        Route("/telefoner", phones),
        Route("/telefoner/lank", new_link, methods=["POST"]),
        Route("/telefoner/{credential}/sparra", revoke_phone, methods=["POST"]),
        Route("/telefon/{token}", enrol, methods=["GET", "POST"]),
        Route("/t/bekrafta", confirm, methods=["POST"]),
        Route("/t/insatser", activities, methods=["POST"]),
        Route("/t/s/{door}", _door_page("sticker")),
        Route("/t/{door}", _door_page("device")),
    ]

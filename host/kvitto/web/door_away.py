"""Away from the home (RULES E2): an activity registered without a tap, its passkey over it.

    routes()   # /borta

The phone first says who (a passkey over a random challenge; skipped while this browser
session confirmed it within DOOR_SESSION_S), which picks the provider whose customers the form
offers: each customer's granted activities that the profile allows away from the home, today's
start and end (not later than now). What the staff fill in becomes a canonical registration
(kvitto.evidence.door.away_registration: provider, customer, activities, start, end, the
phone's credential and a server nonce) and the staff confirm it with one touch: the passkey's
challenge is away_challenge(registration), so the assertion is for that registration only.

Stored: the registration, the assertion and the passkey's key in `door_proofs` (action `away`,
read_id `away:NONCE`, so a nonce is good once), and the claim's `register` record (`via: away`,
manual: no tap) names the proof. Case bundles carry it in door.jsonl (kind `away`), and
kvitto.verify.door_proofs re-checks it offline.

Refused, with a page and a quarantine row (kvitto.web.door_reads.REFUSALS): an assertion whose
challenge is not this registration's (`other_content`: modified or forwarded), another phone
than the one that filled the form in (`other_phone`), a phone not enrolled or revoked, a nonce
used already (`replayed`), a form or confirmation without its live session (`expired`).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kvitto.evidence.door import (
    AwayProof,
    away_challenge,
    b64url,
    client_challenge,
    parse_away_registration,
    unb64url,
)
from kvitto.store.db import Store
from kvitto.store.registry import Credential, Registry
from kvitto.verify.workdays import STOCKHOLM
from kvitto.web import records as chain
from kvitto.web.door import DOOR_SESSION_S, now_of, refuse, relying_party
from kvitto.web.door_reads import (
    CONFIRM_S,
    DoorRefused,
    checked_assertion,
    enrolled_passkey,
    parse_assertion,
    refuse_revoked,
)
from kvitto.web.judge import judge_stale
from kvitto.web.page_frame import render, settings_of
from kvitto.web.visibility import ms

AWAY = ("elsewhere", "tag_or_elsewhere")
# what the refusal page says here rather than kvitto.web.door_reads.REFUSALS' door texts
AWAY_TEXTS = {
    "replayed": "Registreringen är redan gjord. Fyll i en ny om det gäller ett annat besök.",
    "expired": "Det tog för lång tid. Fyll i registreringen igen.",
}


def away_activities(store: Store, provider: str, day: str) -> dict[str, list[tuple[str, str]]]:
    """customer → (code, name) of their orders valid on `day` that the profile allows away
    from the home (RULES E2), for the provider's customers."""
    from kvitto.verify.rules import load_profile

    municipality = store.execute("SELECT municipality FROM providers WHERE id = ?", (provider,))
    profile = load_profile(str(municipality[0][0]))
    away = {code: a.name for code, a in profile.activities.items() if a.where in AWAY}
    out: dict[str, list[tuple[str, str]]] = {}
    for customer, activity, valid_from, valid_to in store.execute(
        "SELECT o.customer, o.activity, o.valid_from, o.valid_to FROM orders o JOIN "
        "customer_providers c ON c.customer = o.customer WHERE c.provider = ? "
        "ORDER BY o.customer, o.id",
        (provider,),
    ):
        if (
            str(activity) in away
            and str(valid_from) <= day
            and (not valid_to or day <= str(valid_to))
        ):
            pair = (str(activity), away[str(activity)])
            if pair not in out.setdefault(str(customer), []):
                out[str(customer)].append(pair)
    return out


def _passkey(store: Store, raw_id: str, now: datetime) -> tuple[Credential, bytes, int]:
    """The enrolled, unrevoked phone of a passkey: (credential, COSE key, sign count)."""
    credential, key, sign_count = enrolled_passkey(store, raw_id)
    refuse_revoked(credential, now)
    return credential, key, sign_count


def _phone_of(store: Store, answer: str, challenge: bytes, rp_id: str, origin: str,
              now: datetime) -> Credential:  # fmt: skip
    """The enrolled, unrevoked phone whose passkey signed `challenge` (who fills the form in)."""
    from webauthn import verify_authentication_response

    raw_id, _ = parse_assertion(answer)
    credential, key, sign_count = _passkey(store, raw_id, now)
    try:
        verified = verify_authentication_response(
            credential=answer, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=key,
            credential_current_sign_count=sign_count, require_user_verification=True,
        )  # fmt: skip
    except Exception as error:  # py_webauthn's refusals and malformed input
        raise DoorRefused("bad_assertion", f"passkey {credential.id}: {error}") from None
    store.execute("UPDATE passkeys SET sign_count = ? WHERE credential = ?",
                  (verified.new_sign_count, credential.id))  # fmt: skip
    return credential


def away_registration_of(
    store: Store, phone: Credential, customer: str, code: str, start: str, end: str,
    now: datetime,
) -> str | None:  # fmt: skip
    """The canonical registration (kvitto.evidence.door.away_registration) of what the form
    says, with a fresh nonce; None when it is not allowed (not the customer's, not allowed
    away, times not today or ending after now)."""
    from kvitto.evidence.door import away_registration
    from kvitto.verify.case import CaseError
    from kvitto.web.claims import check_times

    day = now.astimezone(STOCKHOLM).date().isoformat()
    allowed = away_activities(store, phone.provider, day).get(customer, [])
    if code not in {c for c, _ in allowed}:
        return None
    try:
        begins, ends = check_times(f"{day}T{start}", f"{day}T{end}")
    except CaseError:
        return None
    if ends > now.astimezone(STOCKHOLM) + timedelta(minutes=1):
        return None  # a visit is registered when it is done
    return away_registration(
        provider=phone.provider, customer=customer, activities=[code],
        start=begins.astimezone(STOCKHOLM).isoformat(timespec="minutes"),
        end=ends.astimezone(STOCKHOLM).isoformat(timespec="minutes"),
        credential=phone.id, nonce=secrets.token_urlsafe(16),
    )  # fmt: skip


def confirm_away(
    store: Store, registration: str, answer: str, rp_id: str, origin: str, now: datetime
) -> chain.Record:
    """The passkey's assertion over a registration the server made: checked, stored with the
    registration and the key (door_proofs, action `away`), and the claim registered (a
    `register` record, via away, naming the proof). Raises DoorRefused with the reason."""
    fields = parse_away_registration(registration)  # ours: canonical by construction
    raw_id, parts = parse_assertion(answer)
    if client_challenge(parts[1]) != away_challenge(registration):
        raise DoorRefused("other_content", f"passkey {raw_id[:16]}… signed another registration "
                          f"than {fields['customer']} {fields['start']}–{fields['end']}")  # fmt: skip
    read_id = f"away:{fields['nonce']}"
    if store.execute("SELECT 1 FROM door_proofs WHERE read_id = ?", (read_id,)):
        raise DoorRefused("replayed", f"away registration nonce {fields['nonce']} used already")
    credential, key, sign_count = _passkey(store, raw_id, now)
    if credential.id != fields["credential"]:
        raise DoorRefused("other_phone", f"phone {credential.id} confirmed a registration "
                          f"filled in on phone {fields['credential']}")  # fmt: skip
    proof = AwayProof(
        kind="away", registration=registration, credential=credential.id, public_key=key,
        raw_id=unb64url(raw_id), authenticator_data=parts[0], client_data_json=parts[1],
        signature=parts[2], rp_id=rp_id, origin=origin,
    )  # fmt: skip
    new_count = checked_assertion(proof, sign_count)
    provider, customer = str(fields["provider"]), str(fields["customer"])
    municipality = str(store.execute("SELECT municipality FROM providers WHERE id = ?",
                                     (provider,))[0][0])  # fmt: skip
    month = str(fields["start"])[:7]
    with store.transaction():
        store.execute("UPDATE passkeys SET sign_count = ? WHERE credential = ?",
                      (new_count, credential.id))  # fmt: skip
        try:
            store.execute(
                "INSERT INTO door_proofs (read_id, provider, customer, credential, action, at, "
                "proof) VALUES (?, ?, ?, ?, 'away', ?, ?)",
                (read_id, provider, customer, credential.id, ms(now),
                 json.dumps(proof.as_json(), sort_keys=True)),
            )  # fmt: skip
        except Exception as error:
            if store.is_retryable(error):
                raise
            raise DoorRefused("replayed", f"away registration nonce {fields['nonce']} used "
                              "already") from None  # fmt: skip
        proof_id = int(
            store.execute("SELECT id FROM door_proofs WHERE read_id = ?", (read_id,))[0][0]
        )
        [code] = fields["activities"]
        after = {"activity": code, "staff": credential.staff, "start": fields["start"],
                 "end": fields["end"]}  # fmt: skip
        record = chain.append(
            store, chain=provider, actor=credential.staff, kind="register", at=ms(now),
            body={"via": "away", "credential": credential.id, "proofs": [proof_id],
                  "after": after, "reason_code": "", "text": ""},
            provider=provider, municipality=municipality, customer=customer,
            claim_id=f"b-{proof_id}-{code}", month=month,
        )  # fmt: skip
    judge_stale(store, provider, month, ms(now))
    return record


def _form(request: Request, store: Store, phone: Credential, now: datetime,
          status: int = 200, error: bool = False) -> Response:  # fmt: skip
    day = now.astimezone(STOCKHOLM).date().isoformat()
    return render(request, "away.html", None, phone=phone, no_lang=True, status=status,
                  customers=away_activities(store, phone.provider, day),
                  today=now.astimezone(STOCKHOLM), error=error)  # fmt: skip


def _names(store: Store, provider: str, fields: dict[str, object]) -> list[str]:
    from kvitto.verify.rules import load_profile

    municipality = store.execute("SELECT municipality FROM providers WHERE id = ?", (provider,))
    catalogue = load_profile(str(municipality[0][0])).activities
    codes = fields["activities"]
    assert isinstance(codes, list)
    return [catalogue[c].name if c in catalogue else str(c) for c in codes]


def _identified(store: Store, held: dict[str, object], now_ms: int) -> Credential | None:
    """The phone this browser session confirmed, while its DOOR_SESSION_S last."""
    phone_id = held.get("phone")
    until = held.get("until")
    if not isinstance(phone_id, str) or not isinstance(until, int) or until < now_ms:
        return None
    return Registry(store).credential(phone_id)


async def away(request: Request) -> Response:
    """GET: the form when this session knows the phone, else the passkey's "who". POST with
    `credential`: who it is (or, with steg=bekrafta, the confirmation of the registration);
    POST with `customer`: the registration to confirm."""
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers.structs import UserVerificationRequirement

    form = await request.form() if request.method == "POST" else None

    def options(rp_id: str, challenge: bytes) -> str:
        return options_to_json(generate_authentication_options(
            rp_id=rp_id, challenge=challenge,
            user_verification=UserVerificationRequirement.REQUIRED,
        ))  # fmt: skip

    def run() -> Response:
        store = settings_of(request).store
        now = now_of(request)
        now_ms = ms(now)
        rp_id, origin = relying_party(request)
        held = dict(request.session.get("away") or {})
        phone = _identified(store, held, now_ms)
        if form is None:
            if phone is not None:
                return _form(request, store, phone, now)
            challenge = secrets.token_bytes(32)
            request.session["away"] = {"challenge": b64url(challenge),
                                       "challenge_until": now_ms + CONFIRM_S * 1000}  # fmt: skip
            return render(request, "away.html", None, options=options(rp_id, challenge),
                          no_lang=True)  # fmt: skip
        if "credential" in form and form.get("steg") == "bekrafta":
            return _confirm(request, store, form, held, rp_id, origin, now)
        if "credential" in form:
            if int(held.get("challenge_until", 0)) < now_ms:
                refused = DoorRefused("expired", "away: who, without a live challenge")
                return refuse(request, store, refused, str(form["credential"])[:4000], AWAY_TEXTS)
            try:
                phone = _phone_of(store, str(form["credential"]),
                                  unb64url(str(held.get("challenge", ""))), rp_id, origin, now)  # fmt: skip
            except DoorRefused as refused:
                return refuse(request, store, refused, str(form["credential"])[:4000], AWAY_TEXTS)
            request.session["away"] = {"phone": phone.id, "until": now_ms + DOOR_SESSION_S * 1000}
            return _form(request, store, phone, now)
        if phone is None:
            refused = DoorRefused("expired", "away registration without a confirmed phone")
            return refuse(request, store, refused, json.dumps(dict(form))[:2000], AWAY_TEXTS)
        registration = away_registration_of(
            store, phone, str(form.get("customer", "")), str(form.get("insats", "")),
            str(form.get("start", "")), str(form.get("end", "")), now,
        )  # fmt: skip
        if registration is None:
            return _form(request, store, phone, now, status=400, error=True)
        request.session["away"] = {**held, "pending": registration,
                                   "pending_until": now_ms + CONFIRM_S * 1000}  # fmt: skip
        fields = parse_away_registration(registration)
        return render(request, "away.html", None, phone=phone, no_lang=True, pending=fields,
                      names=_names(store, phone.provider, fields),
                      options=options(rp_id, away_challenge(registration)))  # fmt: skip

    return await run_in_threadpool(run)


def _confirm(request: Request, store: Store, form: FormData, held: dict[str, object],
             rp_id: str, origin: str, now: datetime) -> Response:  # fmt: skip
    answer = str(form["credential"])
    registration = held.get("pending")
    until = held.get("pending_until")
    if not isinstance(registration, str) or not isinstance(until, int) or until < ms(now):
        refused = DoorRefused("expired", "away confirmation without a live registration")
        return refuse(request, store, refused, answer[:4000], AWAY_TEXTS)
    try:
        record = confirm_away(store, registration, answer, rp_id, origin, now)
    except DoorRefused as refused:
        return refuse(request, store, refused, f"{registration}\n{answer}"[:6000], AWAY_TEXTS)
    # the phone stays known for the rest of its session: the next registration is one touch
    request.session["away"] = {k: v for k, v in held.items() if not k.startswith("pending")}
    return render(request, "door_done.html", None, registered=[record], no_lang=True,
                  result={"action": "registered"}, away=True)  # fmt: skip


def routes() -> list[Route]:
    return [Route("/borta", away, methods=["GET", "POST"])]

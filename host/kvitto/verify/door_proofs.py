"""A case bundle's door proofs (`door.jsonl`, docs/formats.md): staff phones at the door.

    checks = check_door_file(case.path / "door.jsonl", case.registry, case.claims)
    checks.integrity, checks.not_checked, checks.counts      # into the verification Result

Each line is one arrive or depart confirmed with a passkey (kvitto.web.door): the door's URL
and the WebAuthn assertion over it with the passkey's public key. Offline, with the bundle's
registry.toml only, this re-checks: the device's Ed25519 signature over a tag-mode URL with the
registered device key, that the device is the customer's; the assertion's signature, that its
challenge is the URL's (kvitto.evidence.door.door_challenge), user verification; that the
public key is the registered phone credential's (its id is the key's hash) of the claim's
provider, not revoked before the visit; and that every claim the line names is in claims.csv
for that customer. A sticker's CMAC needs the sticker's AES keys, which a bundle does not
carry: it is listed as not checked, and a sticker proves no time at the door.

An away registration (RULES E2, no door; action and proof kind `away`, docs/formats.md) carries
the registration's canonical text instead of a URL: this re-checks that the text is canonical,
the assertion's signature and that its challenge is the text's
(kvitto.evidence.door.away_challenge), the phone credential as above (of the registration's
provider), that the registration is the line's customer's and ended before it was confirmed,
and that each claim it names is that staff member's activity at that customer at the
registered times (unless the claim was adjusted later). It is no presence: E2 needs none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kvitto.errors import KvittoError
from kvitto.evidence.door import (
    AwayProof,
    DoorError,
    DoorProof,
    verify_away_proof,
    verify_door_proof,
)
from kvitto.verify.case import CaseError, Claim, Credential, Registry
from kvitto.verify.reasons import because
from kvitto.verify.taps import VERIFIED
from kvitto.verify.visits import Evidence, Presence

DOOR_FILE = "door.jsonl"


@dataclass
class DoorChecks:
    integrity: list[dict[str, Any]] = field(default_factory=list)
    not_checked: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    verified: list[dict[str, Any]] = field(default_factory=list)  # lines that passed


def door_time(entry: dict[str, Any]) -> datetime:
    """When the door was read: a device's signed time (t=), within the server's tolerance of
    the server's clock when it was confirmed; a sticker has no clock, so the server's."""
    proof = entry["proof"]
    if proof.get("kind") == "device":
        query = parse_qs(urlsplit(str(proof.get("url", "")).partition("&s=")[0]).query)
        try:
            return datetime.fromtimestamp(int(query["t"][0]), timezone.utc)
        except (KeyError, ValueError):
            pass
    return datetime.fromtimestamp(int(entry["at"]) / 1000, timezone.utc)


def door_presences(entries: list[dict[str, Any]], registry: Registry) -> list[Presence]:
    """Visits at the door by phone (arrive, then that phone's next depart at that customer) as
    presences for the rules: tap evidence of the phone's staff, `verified`; a sticker's visit
    is not `synced` (no time from the door), so I5 follows it up."""
    out: list[Presence] = []
    open_arrive: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: (int(e["at"]), int(e["id"]))):
        if entry["action"] not in ("arrive", "depart"):
            continue  # an away registration (E2) is no visit at the door
        key = (str(entry["credential"]), str(entry["customer"]))
        if entry["action"] == "arrive":
            open_arrive[key] = entry
            continue
        arrive = open_arrive.pop(key, None)
        if arrive is None:
            continue
        credential = registry.credentials.get(key[0])
        url = str(arrive["proof"].get("url", "")).partition("?")[0]
        sticker = (
            arrive["proof"].get("kind") == "sticker" or entry["proof"].get("kind") == "sticker"
        )
        out.append(Presence(
            customer=key[1], device=url.rsplit("/", 1)[-1], role="tag", kind="visit",
            credential=key[0], staff=credential.staff if credential else "",
            provider=credential.provider if credential else "",
            registered=credential is not None, start=door_time(arrive), end=door_time(entry),
            synced=not sticker, proof=VERIFIED,
        ))  # fmt: skip
    return out


def add_presences(evidence: Evidence, presences: list[Presence]) -> None:
    for presence in presences:
        evidence.presences.append(presence)
        evidence.by_customer.setdefault(presence.customer, []).append(presence)
    for found in evidence.by_customer.values():
        found.sort(key=lambda p: p.start)


def _line(text: str, where: str) -> dict[str, Any]:
    try:
        entry = json.loads(text)
    except ValueError as error:
        raise CaseError(f"{where}: not JSON ({error})") from None
    if not isinstance(entry, dict):
        raise CaseError(f"{where}: not a JSON object")
    for name, kind in (("id", int), ("action", str), ("at", int), ("customer", str),
                       ("claims", list), ("proof", dict)):  # fmt: skip
        if not isinstance(entry.get(name), kind):
            raise CaseError(f"{where}, field {name}: missing or not {kind.__name__}")
    return entry


def check_door_file(path: Path, registry: Registry, claims: list[Claim]) -> DoorChecks:
    """Re-check every door proof of a bundle (see the module docstring)."""
    checks = DoorChecks(counts={"door_proofs": 0, "door_verified": 0, "door_refused": 0,
                                "door_sticker": 0, "door_away": 0})  # fmt: skip
    if not path.exists():
        return checks
    by_id = {claim.claim_id: claim for claim in claims}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path} line {number}"
        entry = _line(text, where)
        checks.counts["door_proofs"] += 1
        if entry["action"] == "away" or entry["proof"].get("kind") == "away":
            problem = _away_problem(entry, registry, by_id, where)
        else:
            problem = _problem(entry, registry, by_id, where)
        if problem:
            checks.counts["door_refused"] += 1
            checks.integrity.append({"rule": "door", "device": entry["customer"],
                                     "seq": entry["id"], "reason": problem})  # fmt: skip
            continue
        checks.counts["door_verified"] += 1
        checks.verified.append(entry)
        if entry["action"] == "away":
            checks.counts["door_away"] += 1
        if entry["proof"].get("kind") == "sticker":
            checks.counts["door_sticker"] += 1
            for claim_id in entry["claims"] or [""]:
                checks.not_checked.append({
                    "rule": "door-sticker", "claim_id": claim_id,
                    "reason": because("door.sticker_arrive" if entry["action"] == "arrive"
                                      else "door.sticker_depart", proof=entry["id"]),
                })  # fmt: skip
    return checks


def _problem(
    entry: dict[str, Any], registry: Registry, claims: dict[str, Claim], where: str
) -> str:
    try:
        proof = DoorProof.from_json(entry["proof"])
    except (DoorError, KvittoError) as error:
        return f"{where}: {error}"
    device_key = None
    if proof.kind == "device":
        path = urlsplit(proof.url.partition("&s=")[0]).path.split("/")
        device = registry.devices.get(path[-1]) if len(path) >= 3 else None
        if device is None:
            return f"{where}: device {path[-1]!r} is not in registry.toml"
        if device.customer != entry["customer"]:
            return f"{where}: device {device.id} is {device.customer}'s, not {entry['customer']}'s"
        device_key = device.public_key
    if entry["action"] not in ("arrive", "depart"):
        return f"{where}: action {entry['action']!r} is not arrive or depart for a door"
    try:
        verify_door_proof(proof, device_key=device_key)
    except KvittoError as error:
        return f"{where}: {error}"
    credential, problem = _phone(registry, proof.credential, entry, where)
    if credential is None:
        return problem
    for claim_id in entry["claims"]:
        claim = claims.get(str(claim_id))
        if claim is None:
            continue  # withdrawn later: the proof still stands, the claim is not billed
        if claim.customer != entry["customer"] or claim.staff != credential.staff:
            return (f"{where}: claim {claim_id} is {claim.staff} at {claim.customer}, the proof "
                    f"{credential.staff} at {entry['customer']}")  # fmt: skip
    return ""


def _phone(
    registry: Registry, credential_id: str, entry: dict[str, Any], where: str
) -> tuple[Credential, str] | tuple[None, str]:
    """(the registry's phone credential, "") or (None, the problem): a `phone` credential in
    registry.toml, not revoked on the day of the line's `at`."""
    credential = registry.credentials.get(credential_id)
    if credential is None or credential.kind != "phone":
        return None, f"{where}: passkey {credential_id} is not a phone credential in registry.toml"
    at = datetime.fromtimestamp(entry["at"] / 1000, timezone.utc)
    if credential.revoked is not None and credential.revoked <= at.date():
        return None, f"{where}: phone {credential.id} was revoked on {credential.revoked}"
    return credential, ""


def _away_problem(
    entry: dict[str, Any], registry: Registry, claims: dict[str, Claim], where: str
) -> str:
    """What is wrong with an away registration's line, or "" (see the module docstring)."""
    if entry["action"] != "away" or entry["proof"].get("kind") != "away":
        return f"{where}: an away registration has action and proof kind 'away'"
    try:
        fields = verify_away_proof(AwayProof.from_json(entry["proof"]))
    except KvittoError as error:
        return f"{where}: {error}"
    if fields["customer"] != entry["customer"]:
        return (
            f"{where}: the registration is {fields['customer']}'s, the line {entry['customer']}'s"
        )
    credential, problem = _phone(registry, str(fields["credential"]), entry, where)
    if credential is None:
        return problem
    if credential.provider != fields["provider"]:
        return (f"{where}: phone {credential.id} is {credential.provider}'s, the registration "
                f"{fields['provider']}'s")  # fmt: skip
    try:
        start = datetime.fromisoformat(str(fields["start"]))
        end = datetime.fromisoformat(str(fields["end"]))
    except ValueError:
        return f"{where}: the registration's start or end is not a time"
    if start.tzinfo is None or end.tzinfo is None or not start < end:
        return f"{where}: the registration's start and end are not an interval with offsets"
    if end.timestamp() * 1000 > int(entry["at"]) + 60_000:
        return f"{where}: the registration ends after it was confirmed"
    for claim_id in entry["claims"]:
        claim = claims.get(str(claim_id))
        if claim is None:
            continue  # withdrawn later: the proof still stands, the claim is not billed
        if (
            claim.customer != fields["customer"]
            or claim.staff != credential.staff
            or claim.activity not in fields["activities"]
            or (claim.adjusted_at is None and (claim.start, claim.end) != (start, end))
        ):
            return (f"{where}: claim {claim_id} is {claim.staff}'s {claim.activity} at "
                    f"{claim.customer} {claim.start:%H:%M}–{claim.end:%H:%M}, not the "
                    f"registration the passkey signed")  # fmt: skip
    return ""

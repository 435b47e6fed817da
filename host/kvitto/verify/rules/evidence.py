"""E — evidence of presence (RULES.md E1–E7): does signed device evidence show the claimed visit?

    from kvitto.verify.rules.evidence import coverage
    seen = coverage(facts, claim, tolerance_minutes=2)
    seen.own_minutes, seen.where   # minutes of the claim covered by the customer's own door

Only evidence from the customer's own tag (or the household's lock) counts (E6): a building's
shared entrance lock never does, and a claim it alone shows gets E1's `entrance_only`; with E7 only
registered, non-revoked credentials of the claim's provider count. A visit whose tap proof was
refused (a forged or replayed NTAG 424 SUN, a phone answer that does not verify; kvitto.verify.taps)
never counts; E7 (or E1 without it) names the event and why. A proof the bundle has no keys
for counts, and is listed as not checked.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.reasons import Reason, because
from kvitto.verify.rules import Facts, Finding, hhmm, rule, span
from kvitto.verify.taps import REFUSED, UNCHECKED
from kvitto.verify.visits import Presence, union_seconds


@dataclass(slots=True)
class Coverage:
    """Kept for each claim while the rules run (E1, E4, E6, E7 and I5 ask): slots and tuples,
    the empty ones all the one shared (), so a month of claims fits in memory (issue #10)."""

    claimed_minutes: int
    own: tuple[Presence, ...] = ()  # own door, matching staff, counted
    own_minutes: float = 0.0
    household_minutes: float = 0.0  # own + cohabitants' tags (same staff)
    foreign: tuple[Presence, ...] = ()  # cohabitants' tags only
    unknown: tuple[Presence, ...] = ()  # I6: credential unknown or revoked, in every profile
    unregistered: tuple[Presence, ...] = ()  # E7: another provider's credential
    refused: tuple[Presence, ...] = ()  # tap proof refused: never counted
    unsynced: bool = False

    def refusals(self) -> tuple[Reason, ...]:
        """Why each refused tap is refused (a reason's parameter, in words at the edge)."""
        found = {p.proof_reason for p in self.refused if p.proof_reason is not None}
        return tuple(sorted(found, key=lambda r: (r.code, repr(r.args))))

    def where(self) -> dict[str, str]:
        """The own door's evidence as a reason's parameters: first, last, devices."""
        if not self.own:
            return {"first": "", "last": "", "devices": ""}
        first = min(p.start for p in self.own)
        last = max((p.end for p in self.own if p.end is not None), default=first)
        devices = ", ".join(sorted({p.device for p in self.own}))
        return {"first": hhmm(first), "last": hhmm(last), "devices": devices}


def _clip(
    presences: Sequence[Presence], start: datetime, end: datetime, slack: timedelta
) -> float:
    spans = []
    for p in presences:
        if p.end is None:
            continue
        a, b = max(p.start - slack, start), min(p.end + slack, end)
        if b > a:
            spans.append((a, b))
    return union_seconds(spans) / 60


def coverage(facts: Facts, claim: Claim, tolerance_minutes: float) -> Coverage:
    """What the evidence shows for a claim (cached per claim and tolerance)."""
    cached = facts.cache.get(tolerance_minutes)  # the float alone: no tuple made per call
    if cached is None:
        cached = facts.cache[tolerance_minutes] = {}
    found = cached.get(claim.claim_id)
    if found is None:
        found = cached[claim.claim_id] = _coverage(facts, claim, tolerance_minutes)
    return found


def _coverage(facts: Facts, claim: Claim, tolerance_minutes: float) -> Coverage:
    slack = _SLACK.get(tolerance_minutes) or _SLACK.setdefault(
        tolerance_minutes, timedelta(minutes=tolerance_minutes)
    )
    e7 = facts.profile.active("E7")
    provider = facts.registry.staff_provider(claim.staff) if e7 else ""
    result = Coverage(claimed_minutes=claim.minutes)
    unknown: list[Presence] = []
    unregistered: list[Presence] = []
    refused: list[Presence] = []
    home = facts.registry.household_of(claim.customer)
    cohabitants = (
        [c for c in _households(facts).get(home, ()) if c != claim.customer]
        if home != claim.customer
        else ()  # lives alone: household_of gives the customer's own id
    )
    staff = claim.staff

    def counts(p: Presence) -> bool:
        if p.staff and staff and p.staff != staff:
            return False
        if p.kind == "alarm":
            return False  # alarm-unit buttons carry no credential: only A1 uses them
        if not p.registered:
            # I6 (every profile): a credential the registry does not know, or revoked before
            # the event, is not evidence of staff presence.
            unknown.append(p)
            return False
        if e7 and provider and p.provider != provider:
            unregistered.append(p)
            return False
        if p.proof == REFUSED:
            if p.customer == claim.customer:
                refused.append(p)
            return False
        return True

    low, high = claim.start - slack, claim.end + slack
    own = tuple([
        p
        for p in _near(facts, claim.customer, low, high)
        if (p.end is None or p.end >= low) and counts(p)
    ])  # fmt: skip
    result.own = own
    if own:
        result.own_minutes = _clip(own, claim.start, claim.end, slack)
        # Only a presence at the claim's own door that covers the claim makes its proof this
        # claim's concern: a cohabitant's device (E6) or a neighbouring visit is another
        # claim's.
        for p in own:
            if p.proof == UNCHECKED and _clip((p,), claim.start, claim.end, slack) > 0:
                facts.skip(
                    "E7", because("E7.proof_unchecked", detail=p.proof_reason), claim.claim_id
                )
        result.unsynced = not all(p.synced for p in own)
    household: list[Presence] = list(own) if cohabitants else []
    foreign: list[Presence] = []
    for other in cohabitants:
        for p in _near(facts, other, low, high):
            if p.own and p.role != "lock" and counts(p):
                if p.start <= high and p.end and p.end >= low:
                    household.append(p)
                    foreign.append(p)
    if foreign:
        result.household_minutes = _clip(household, claim.start, claim.end, slack)
        result.foreign = tuple(foreign)
    else:  # the same presences clipped the same way: the same figure, kept once
        result.household_minutes = result.own_minutes
    if unknown:
        result.unknown = tuple(unknown)
    if unregistered:
        result.unregistered = tuple(unregistered)
    if refused:
        result.refused = tuple(refused)
    return result


def _households(facts: Facts) -> dict[str, list[str]]:
    """Household → its customers, made once per registry (a month judged customer by customer,
    kvitto.verify.month, has a Facts per unit but one registry)."""
    found = facts.cache.get("households")
    if found is None:
        registry = facts.registry
        kept = registry.__dict__.get("_households")
        if kept is None or kept[0] != len(registry.customers):
            households: dict[str, list[str]] = {}
            for customer in registry.customers:
                households.setdefault(registry.household_of(customer), []).append(customer)
            kept = registry.__dict__["_households"] = (len(registry.customers), households)
        found = facts.cache["households"] = kept[1]
    return found


_LONGEST_PRESENCE = timedelta(hours=24)
_SLACK: dict[
    float, timedelta
] = {}  # tolerance minutes → timedelta, made once  # a presence starting earlier than this is not near


def _near(facts: Facts, customer: str, start: datetime, end: datetime) -> list[Presence]:
    """The customer's presences starting in [start - 24 h, end], found by bisection."""
    key = f"starts:{customer}"
    presences = facts.evidence.for_customer(customer)
    starts = facts.cache.get(key)
    if starts is None:
        starts = array("d", [p.start.timestamp() for p in presences])  # 8 bytes a float
        facts.cache[key] = starts
    low = bisect_left(starts, (start - _LONGEST_PRESENCE).timestamp())
    high = bisect_right(starts, end.timestamp())
    return presences[low:high]


def _tag_required(facts: Facts, claim: Claim) -> bool:
    """Whether the claim's activity needs the customer's door (asked four times a claim: the
    answer is kept per activity code)."""
    known: dict[str, bool] | None = facts.cache.get("tag_required")
    if known is None:
        known = facts.cache["tag_required"] = {}
    found = known.get(claim.activity)
    if found is None:
        found = known[claim.activity] = _activity_needs_tag(facts, claim.activity)
    return found


def _activity_needs_tag(facts: Facts, code: str) -> bool:
    activity = facts.activity(code)
    if activity is None or activity.where != "tag":
        return False
    if facts.profile.active("A1") and code in facts.profile.rules["A1"].get("activities", []):
        return False  # A1 checks alarm visits against the alarm unit as well
    return True


def _exempt(facts: Facts, claim: Claim) -> bool:
    exempt_customers = facts.cache.get("exempt")
    if exempt_customers is None:
        exempt_customers = {o.customer for o in facts.orders if o.tag_exempt}
        facts.cache["exempt"] = exempt_customers
    if claim.customer not in exempt_customers:
        return False
    order = facts.order_for(claim.customer, claim.activity, claim.local_start.date())
    if order is not None and order.tag_exempt:
        return True
    return any(o.tag_exempt for o in facts.orders_on(claim.customer, claim.local_start.date()))


def _manual_followed_up(facts: Facts, claim: Claim) -> bool:
    """A manual registration where E5 applies: E5's follow_up, with or without a reason (a
    missing reason is named there; it does not by itself make the claim a reject)."""
    return facts.profile.active("E5") and claim.registered_via == "manual"


def _cohabitant_back_to_back(cover: Coverage, claim: Claim, tolerance: float) -> bool:
    """Huddinge alternative 2 (001 Sammanboende): own tag shows the visit, time was spent in
    the household; the share between cohabitants is T2's business."""
    return bool(cover.own) and cover.claimed_minutes - cover.household_minutes <= tolerance


@rule("E1")
def e1_tag_required(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Tag-required activities need own-door evidence covering the claim (000 §1.2.1 …)."""
    tolerance = float(params.get("tolerance_minutes", 2))
    arrival_only = set(params.get("arrival_only", []))
    findings = []
    for claim in facts.claims:
        if not _tag_required(facts, claim):
            continue
        if (facts.profile.active("E3") and _exempt(facts, claim)) or _manual_followed_up(
            facts, claim
        ):
            continue
        cover = coverage(facts, claim, tolerance)
        if claim.activity not in arrival_only and (
            cover.claimed_minutes - cover.own_minutes <= tolerance
        ):
            continue  # the common case, decided before any text is made
        when = span(claim.start, claim.end)
        if claim.activity in arrival_only:
            # 000 §1.2.2.4: a visit declined at the door needs the arrival on the tag.
            if cover.own:
                continue
            if _foreign_or_unregistered(facts, cover):
                continue
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "E1",
                    "reject",
                    0,
                    because("E1.no_arrival", when=when),
                )  # fmt: skip
            )
            continue
        missing = cover.claimed_minutes - cover.own_minutes
        if missing <= tolerance:
            continue
        if cover.own and _cohabitant_back_to_back(cover, claim, tolerance):
            continue
        if cover.own_minutes > 0:
            shown = _clip(cover.own, claim.start, claim.end, timedelta(0))
            payable = min(claim.minutes, round(shown))
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "E1",
                    "adjust",
                    payable,
                    because(
                        "E1.partly_shown",
                        when=when,
                        payable=payable,
                        claimed=claim.minutes,
                        **cover.where(),
                    ),
                )  # fmt: skip
            )
            continue
        if _foreign_or_unregistered(facts, cover):
            continue  # E6 or E7 reports it, with the reason
        entrance = _entrance_passages(facts, claim, tolerance)
        if entrance and not cover.refused:
            findings.append(
                Finding(claim.claim_id, claim.customer, "E1", "reject", 0,
                        because("E1.entrance_only", when=when, staff=claim.staff or "?",
                                activity=facts.name_of(claim.activity), devices=entrance))
            )  # fmt: skip
            continue
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "E1",
                "reject",
                0,
                because(
                    "E1.no_evidence_refused",
                    when=when,
                    activity=facts.name_of(claim.activity),
                    staff=claim.staff or "?",
                    detail=cover.refusals(),
                )
                if cover.refused
                else because(
                    "E1.no_evidence",
                    when=when,
                    activity=facts.name_of(claim.activity),
                    staff=claim.staff or "?",
                ),
            )  # fmt: skip
        )
    return findings


def _entrance_passages(facts: Facts, claim: Claim, tolerance: float) -> str:
    """The shared entrance locks serving the claim's customer that the claim's staff passed
    during the claim ("" if none): access records, named so the report says why they do not
    count (RULES E6, issue #23)."""
    slack = timedelta(minutes=tolerance)
    found = {
        p.device
        for p in facts.evidence.entrance
        if claim.start - slack <= p.start <= claim.end + slack
        and (not claim.staff or p.staff == claim.staff)
        and claim.customer in facts.registry.devices[p.device].customers
    }
    return ", ".join(sorted(found))


def _foreign_or_unregistered(facts: Facts, cover: Coverage) -> bool:
    """Whether E6, E7 or I6 names why the door shows nothing usable (E1 then stays quiet)."""
    return (
        (facts.profile.active("E6") and bool(cover.foreign))
        or (facts.profile.active("E7") and bool(cover.unregistered or cover.refused))
        or (facts.profile.active("I6") and bool(cover.unknown))
    )


@rule("E2")
def e2_elsewhere_allowed(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Activities allowed away from home need no tag evidence (000 §1.2.2.2; 001 Tvätt …).

    The profile's `where = "elsewhere"` entries are the rule; it never raises a finding, it
    keeps E1 from rejecting them."""
    return []


@rule("E3")
def e3_exemption(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """An approved exemption (order tag_exempt = 1) replaces tag evidence (000 §1.2.8)."""
    findings = []
    for claim in facts.claims:
        if _tag_required(facts, claim) and _exempt(facts, claim):
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "E3",
                    "follow_up",
                    claim.minutes,
                    because("E3.exempt", when=span(claim.start, claim.end)),
                )  # fmt: skip
            )
    return findings


@rule("E4")
def e4_arrive_and_depart(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Nurse/OT/PT visits: arrival and departure on the tag, no corrections (000 §1.2.4.2.1)."""
    findings = []
    for claim in facts.claims:
        activity = facts.activity(claim.activity)
        if activity is None or not activity.arrive_and_depart:
            continue
        if claim.adjusted_at is not None:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "E4",
                    "reject",
                    0,
                    because(
                        "E4.adjusted",
                        when=span(claim.start, claim.end),
                        adjusted=f"{claim.adjusted_at:%Y-%m-%d %H:%M}",
                        activity=facts.name_of(claim.activity),
                    ),
                )  # fmt: skip
            )
            continue
        cover = coverage(
            facts, claim, float(facts.profile.rules.get("E1", {}).get("tolerance_minutes", 2))
        )
        if any(p.end is None for p in cover.own) and cover.own_minutes == 0:
            arrival = min(p.start for p in cover.own)
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "E4",
                    "reject",
                    0,
                    because(
                        "E4.no_departure", when=span(claim.start, claim.end), arrival=hhmm(arrival)
                    ),
                )  # fmt: skip
            )
    return findings


@rule("E5")
def e5_manual_followed_up(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Manual/after-the-fact registration where evidence was required: follow_up at best,
    counted per provider (001 Arbetsprocess; 003 Efterregistrering)."""
    findings = []
    per_provider: dict[str, int] = {}
    for claim in facts.claims:
        if claim.registered_via != "manual" or not _tag_required(facts, claim):
            continue
        provider = facts.registry.staff_provider(claim.staff) or "?"
        per_provider[provider] = per_provider.get(provider, 0) + 1
        when = span(claim.start, claim.end)
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "E5",
                "follow_up",
                claim.minutes,
                because("E5.manual_reason", when=when, given=claim.reason)
                if claim.reason
                else because("E5.manual_reason_missing", when=when),
            )  # fmt: skip
        )
    facts.counts["manual_registrations"] = per_provider
    return findings


def _claims_needing_own_evidence(facts: Facts) -> list[tuple[Any, Any]]:
    """(claim, its door coverage) for each claim that needs the customer's own evidence and is
    neither exempt (E3) nor an explained manual registration: what E6, E7 and I6 look at (found
    once for the three)."""
    found = facts.cache.get("needing_own_evidence")
    if found is None:
        found = facts.cache["needing_own_evidence"] = list(_needing_own_evidence(facts))
    return found


def _needing_own_evidence(facts: Facts) -> Iterator[tuple[Any, Any]]:
    tolerance = float(facts.profile.rules.get("E1", {}).get("tolerance_minutes", 2))
    arrival_only = set(facts.profile.rules.get("E1", {}).get("arrival_only", []))
    for claim in facts.claims:
        if not _tag_required(facts, claim) or _manual_followed_up(facts, claim):
            continue
        if facts.profile.active("E3") and _exempt(facts, claim):
            continue
        cover = coverage(facts, claim, tolerance)
        if claim.activity not in arrival_only and (
            cover.claimed_minutes - cover.own_minutes <= tolerance
        ):
            continue  # nothing missing (E1's test): what else is at the door takes nothing
        yield claim, cover


@rule("E6")
def e6_one_tag_per_customer(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """A cohabitant's tag is never evidence for this customer (001 Sammanboende)."""
    findings = []
    for claim, cover in _claims_needing_own_evidence(facts):
        if cover.own or not cover.foreign:
            continue
        devices = ", ".join(sorted({f"{p.device} ({p.customer})" for p in cover.foreign}))  # ids
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "E6",
                "reject",
                0,
                because(
                    "E6.cohabitant_tag",
                    when=span(claim.start, claim.end),
                    devices=devices,
                    customer=claim.customer,
                ),
            )  # fmt: skip
        )
    return findings


@rule("E7")
def e7_provider_phone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Only the provider's registered, non-revoked credentials are evidence (003 Mobiler)."""
    findings = []
    for claim, cover in _claims_needing_own_evidence(facts):
        if cover.own or (facts.profile.active("E6") and cover.foreign):
            continue
        if not cover.unregistered and not cover.refused:
            continue
        when = span(claim.start, claim.end)
        shown = ", ".join(sorted({p.credential[:8] or "?" for p in cover.unregistered}))
        # a refused proof is a forged or replayed one (DESIGN "Taps and credentials")
        if cover.unregistered and cover.refused:
            why = because(
                "E7.other_provider_and_refused",
                when=when,
                credentials=shown,
                detail=cover.refusals(),
            )
        elif cover.unregistered:
            why = because("E7.other_provider", when=when, credentials=shown)
        else:
            why = because("E7.refused", when=when, detail=cover.refusals())
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "E7",
                "reject",
                0,
                why,
            )  # fmt: skip
        )
    return findings


@rule("I6")
def i6_known_credential(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """In every profile a tap by a credential the registry does not know, or revoked before
    the event, is not evidence of staff presence (RULES.md I6; 001 Arbetsprocess, 003 Mobiler
    add the provider's own phones, E7)."""
    findings = []
    for claim, cover in _claims_needing_own_evidence(facts):
        if cover.own or not cover.unknown:
            continue
        if facts.profile.active("E6") and cover.foreign:
            continue  # E6 names the cohabitant's tag
        shown = ", ".join(sorted({p.credential[:8] or "?" for p in cover.unknown}))
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "I6",
                "reject",
                0,
                because(
                    "I6.unknown_credential", when=span(claim.start, claim.end), credentials=shown
                ),
            )  # fmt: skip
        )
    return findings

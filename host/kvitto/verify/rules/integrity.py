"""I — integrity of the evidence itself (RULES.md I1–I5, the project's own rules).

    issues = facts.evidence.issues        # I1–I4 found while reading (kvitto.verify.visits)
    findings = RULES["I5"](facts, {})     # claims resting on unsynchronised device time

I1 (signature), I2 (replay), I3 (gap) and I4 (chain) are checked in kvitto.verify.visits while the
evidence is read; they are reported in the output's `integrity` list, never per claim.
"""

from __future__ import annotations

from typing import Any

from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.rules.evidence import coverage


@rule("I1")
def i1_signature(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    return []  # kvitto.verify.visits.build_evidence: unverifiable events never become presence


@rule("I2")
def i2_replay(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    return []  # kvitto.verify.visits.build_evidence: (device, seq) stored once


@rule("I3")
def i3_gap(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    return []  # kvitto.verify.visits.build_evidence: missing sequences in `integrity`


@rule("I4")
def i4_chain(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    return []  # kvitto.verify.visits.build_evidence: prev hash checked between neighbours


@rule("I5")
def i5_clock(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Claims resting on evidence with unsynchronised device time are follow_up."""
    tolerance = float(facts.profile.rules.get("E1", {}).get("tolerance_minutes", 2))
    facts.skip("I5", because("I5.no_receive_times"))
    findings = []
    for claim in facts.claims:
        cover = coverage(facts, claim, tolerance)
        if cover.own and cover.unsynced and cover.own_minutes > 0:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "I5",
                    "follow_up",
                    claim.minutes,
                    because("I5.unsynced", when=span(claim.start, claim.end), **cover.where()),
                )  # fmt: skip
            )
    return findings

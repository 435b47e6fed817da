"""What the web's live judge trusts: the store's events were verified by the collector's intake,
so it does not check their signatures again (kvitto.verify.visits.build_evidence with
intake_verified, docs/decisions.md); a case bundle's verification checks every one.

A message whose signature was altered after signing: the intake quarantines it (the store's
events are only what verified), `kvitto verify` of the bundle reports it (I1) and counts no
visit from it, and the web's judgement of the store (which never saw it) gives the claim the
findings the bundle's verification gives. The last test pins that the flag is what trusts:
without it, build_evidence refuses the altered message.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from verify_support import Bundle

from kvitto.store.db import open_store
from kvitto.verify.case import parse_registry
from kvitto.verify.check import verify_case
from kvitto.verify.visits import build_evidence
from kvitto.web.judge import judge
from kvitto.web.load import load_case

NOW_MS = int(datetime(2026, 10, 31, 12, tzinfo=ZoneInfo("Europe/Stockholm")).timestamp() * 1000)


def altered_bundle(root: Path) -> tuple[Bundle, bytes]:
    """c-1001's visit k-1 whose depart's signature was altered; returns it and that message."""
    b = Bundle(root)
    b.customer("c-1001")
    b.device("tag-0042", "c-1001")
    b.credential("s-07")
    b.order("c-1001", "omsorg")
    b.visit("tag-0042", "s-07", "2026-10-05T08:00", "2026-10-05T08:40")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-05T08:00", "2026-10-05T08:40")
    depart = b.messages[-1]
    altered = depart[:-1] + bytes([depart[-1] ^ 1])
    b.messages[-1] = altered
    b.write()
    return b, altered


def test_the_intake_refuses_and_a_bundle_reports_what_the_web_never_sees(tmp_path):
    b, altered = altered_bundle(tmp_path / "case")
    offline = verify_case(b.root, "huddinge", "2026-10")
    assert "I1" in {i["rule"] for i in offline.integrity if i["device"] == "tag-0042"}
    store = open_store(f"sqlite:///{tmp_path / 'kvitto.db'}")
    load_case(store, b.root, provider="p-1", municipality="huddinge", now_ms=NOW_MS)
    assert [bytes(row[4]) for row in store.quarantined()] == [altered]
    assert altered not in [bytes(row[6]) for row in store.events()]
    judge(store, "p-1", "2026-10", NOW_MS)
    web = set(store.execute("SELECT rule, outcome FROM verdicts WHERE claim_id = 'k-1'"))
    assert web == {(f.rule, f.outcome) for f in offline.findings_for("k-1")}
    assert web, "the claim without its depart has findings"


def test_only_the_intake_verified_flag_skips_the_signature_check(tmp_path):
    b, altered = altered_bundle(tmp_path / "case")
    registry = parse_registry(b.registry_toml())
    checked = build_evidence(registry, b.messages)
    assert ("I1", "tag-0042") in {(i.rule, i.device) for i in checked.issues}
    assert [p.end for p in checked.presences] == [None]  # the arrival alone: an open visit
    trusted = build_evidence(registry, b.messages, intake_verified=True)
    assert "I1" not in {i.rule for i in trusted.issues}
    assert [p.end is not None for p in trusted.presences] == [True]
    assert altered in b.messages

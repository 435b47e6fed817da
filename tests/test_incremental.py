"""Incremental verdicts equal a full rebuild: random sequences of signed events (through the
collector's intake), claim imports, corrections, after-the-fact registrations, withdrawals and
auditors' decisions, each followed by the web app's incremental re-judging
(kvitto.web.judge.judge_stale), give after every step the findings and billing a full judgement
of a copy of the store gives.

The month has a household (c-1001, c-1002) and staff who work at several customers with
overlapping claims (T2 shares their time), so a change reaches past its own customer. Fixed
seeds, bounded steps. While writing it, each of these made the test fail: not marking a
correction (kvitto.web.records._mark), not marking stored events (kvitto.collect.intake), and
judging only the changed customer (Reach without the staff's other customers). The second
test pins the reach itself (household and staff).

The live judge (kvitto.web.live.LiveJudge, `kvitto judge --live`) keeps the decoded events and
parsed claims between rounds: the same object judges after most steps of a sequence (the web
app's judge_stale after the others, as kvitto serve does beside it), so what it kept must follow
each import, correction, registration, withdrawal, decision and late journal.
There, late journals arrive with a receipt stamped long before their commit (a lagging intake),
which only the live judge's count check finds; the other events come through its received
mark.
"""

from __future__ import annotations

import csv
import hashlib
import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from verify_support import CLAIM_FIELDS, Bundle

from kvitto.collect import intake
from kvitto.collect.intake import ingest
from kvitto.store import stale
from kvitto.store.db import Store, open_store
from kvitto.store.entrance import add_entrance_lock
from kvitto.store.registry import Registry as StoreRegistry
from kvitto.verify.case import parse_registry
from kvitto.web import judge as web_judge
from kvitto.web import live as web_live
from kvitto.web.accounts import add_user, get_user
from kvitto.web.claims import import_claims
from kvitto.web.judge import (
    case_registry,
    effective_rows,
    judge,
    judge_stale,
    provider_profile,
    rejudge_stale,
)
from kvitto.web.live import LiveJudge
from kvitto.web.load import load_case
from kvitto.web.scope import Scope

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=STOCKHOLM)
NOW_MS = int(NOW.timestamp() * 1000)
MONTH = "2026-11"
CUSTOMERS = {"c-1001": "h-1", "c-1002": "h-1", "c-1003": "", "c-1004": ""}
STAFF = ("s-07", "s-08", "s-09")
PASSWORD = "korrekt-hast-batteri-klammer"


class Month:
    """p-1's November in a store, and the moves the test makes on it."""

    def __init__(self, root: Path, rng: random.Random, live: bool = False):
        self.root, self.rng = root, rng
        self.bundle = b = Bundle(root / "case", start_boot_at="2026-11-01T06:00")
        for customer, household in CUSTOMERS.items():
            b.customer(customer, household=household)
            b.device(f"tag-{customer[2:]}", customer)
            b.order(customer, "omsorg")
        for staff in STAFF:
            b.credential(staff, provider="p-1")
        self.cursor = {f"tag-{c[2:]}": datetime(2026, 11, 2, 7, 0, tzinfo=STOCKHOLM)
                       for c in CUSTOMERS}  # fmt: skip
        self.claims = 0
        self.pending: list[bytes] = []
        self.deck: list[str] = []
        for _ in range(6):
            self.visit(emit=False)
        b.write()
        self.url = f"sqlite:///{root / 'kvitto.db'}"
        self.store = open_store(self.url)
        load_case(self.store, b.root, provider="p-1", municipality="huddinge", now_ms=NOW_MS)
        judge(self.store, "p-1", MONTH, NOW_MS)
        add_user(self.store, "samordnare-p1", "coordinator", PASSWORD, provider="p-1")
        add_user(self.store, "uppfoljare", "auditor", PASSWORD, municipality="huddinge")
        # the live judge: one object across the whole sequence (None: judge_stale each step)
        self.live = LiveJudge(self.store, freeze=False) if live else None

    def scope(self, name: str) -> Scope:
        user = get_user(self.store, name)
        assert user is not None
        return Scope(self.store, user, NOW)

    def _times(self, device: str) -> tuple[datetime, datetime]:
        start = self.cursor[device] + timedelta(minutes=self.rng.randrange(30, 20 * 60, 15))
        end = start + timedelta(minutes=self.rng.choice((15, 30, 45)))
        self.cursor[device] = end
        return start, end

    def visit(self, emit: bool = True) -> None:
        """A visit: signed arrive and depart, and usually a claim (sometimes another staff
        member's, sometimes longer than the evidence), at one customer."""
        customer = self.rng.choice(list(CUSTOMERS))
        device = f"tag-{customer[2:]}"
        staff = self.rng.choice(STAFF)
        start, end = self._times(device)
        first = len(self.bundle.messages)
        self.bundle.visit(device, staff, start.isoformat(), end.isoformat())
        if emit and self.rng.random() < 0.5:
            # the device was offline: its journal arrives later (`deliver`), after the claim
            self.pending += self.bundle.messages[first:]
        elif emit:
            self._ingest(self.bundle.messages[first:])
        if self.rng.random() < 0.8:
            claimed = end + timedelta(minutes=self.rng.choice((0, 0, 10, 25)))
            if CUSTOMERS[customer] and self.rng.random() < 0.4:  # at the cohabitant's (E6)
                customer = "c-1002" if customer == "c-1001" else "c-1001"
            self.claim(customer, self.rng.choice((staff, staff, *STAFF)), start, claimed, emit)

    def claim(self, customer: str, staff: str, start: datetime, end: datetime, emit: bool) -> None:
        self.claims += 1
        fields = {"registered_via": self.rng.choice(("tag", "tag", "manual")),
                  "reason": "teknikfel", "approved_at": ""}  # fmt: skip
        if not emit:
            self.bundle.claim(f"k-{self.claims}", customer, staff, "omsorg", start.isoformat(),
                              end.isoformat(), **fields)  # fmt: skip
            return
        path = self.root / f"claims-{self.claims}.csv"
        with open(path, "w", newline="") as out:
            writer = csv.DictWriter(out, CLAIM_FIELDS, lineterminator="\n")
            writer.writeheader()
            row = {name: "" for name in CLAIM_FIELDS}
            row.update(claim_id=f"k-{self.claims}", customer=customer, staff=staff,
                       activity="omsorg", start=start.isoformat(), end=end.isoformat(),
                       registered_at=end.isoformat(), **fields)  # fmt: skip
            writer.writerow(row)
        import_claims(self.store, "p-1", path, provider_profile(self.store, "p-1"), NOW_MS)

    def _ingest(self, messages: list[bytes]) -> None:
        path = self.root / f"live-{len(self.bundle.messages)}.cbor-seq"
        path.write_bytes(b"".join(messages))
        ingest(self.store, path)

    def deliver(self) -> None:
        if self.pending:
            if self.live is not None:
                # stamped received ten minutes before it commits: past the live judge's margin
                lagging = intake.now_ms() - 600_000
                saved, intake.now_ms = intake.now_ms, lambda: lagging
                try:
                    self._ingest(self.pending)
                finally:
                    intake.now_ms = saved
            else:
                self._ingest(self.pending)
            self.pending = []

    def overlap(self) -> None:
        """A claim of a staff member at another customer, overlapping one of theirs (T2)."""
        rows = effective_rows(self.store, "p-1", MONTH, None)
        if not rows:
            return
        row = rows[self.rng.choice(sorted(rows))]
        others = [c for c in CUSTOMERS if c != row["customer"]]
        start = datetime.fromisoformat(row["start"]) + timedelta(minutes=10)
        self.claim(self.rng.choice(others), row["staff"], start, start + timedelta(minutes=30),
                   True)  # fmt: skip

    def correct(self) -> None:
        rows = effective_rows(self.store, "p-1", MONTH, None)
        if not rows:
            return
        claim_id = self.rng.choice(sorted(rows))
        end = datetime.fromisoformat(rows[claim_id]["end"])
        shift = timedelta(minutes=self.rng.choice((-10, 10, 20, 40)))
        start = datetime.fromisoformat(rows[claim_id]["start"])
        if end + shift <= start:
            shift = timedelta(minutes=15)
        self.scope("samordnare-p1").correct(
            claim_id, "annan-tid", "", {"end": (end + shift).isoformat(timespec="minutes")}
        )

    def register(self) -> None:
        customer = self.rng.choice(list(CUSTOMERS))
        start = datetime(2026, 11, self.rng.randrange(3, 28), self.rng.randrange(7, 20),
                         tzinfo=STOCKHOLM)  # fmt: skip
        self.scope("samordnare-p1").register(
            customer, "omsorg", start.isoformat(timespec="minutes"),
            (start + timedelta(minutes=30)).isoformat(timespec="minutes"),
            self.rng.choice(STAFF), "glomt-registrera", "",
        )  # fmt: skip

    def withdraw(self) -> None:
        rows = effective_rows(self.store, "p-1", MONTH, None)
        if len(rows) > 3:
            self.scope("samordnare-p1").withdraw(self.rng.choice(sorted(rows)), "fel-insats", "")

    def decide(self) -> None:
        open_ones = self.store.execute(
            "SELECT claim_id, rule FROM verdicts WHERE provider = 'p-1' AND month = ? "
            "AND outcome = 'follow_up' ORDER BY claim_id, rule", (MONTH,)
        )  # fmt: skip
        if open_ones:
            claim_id, rule = self.rng.choice(open_ones)
            decision = self.rng.choice(("accept", "reject"))
            self.scope("uppfoljare").decide("p-1", claim_id, rule, decision, "kontrollerat")

    def step(self) -> str:
        if self.pending and self.rng.random() < 0.4:
            move = "deliver"
        else:
            if not self.deck:
                self.deck = ["visit"] * 4 + ["overlap", "correct", "correct", "register",
                                             "withdraw", "decide", "decide"]  # fmt: skip
                self.rng.shuffle(self.deck)
            move = self.deck.pop()
        getattr(self, move)()
        if self.live is not None and self.rng.random() < 0.75:
            self.live.round(NOW_MS)  # kvitto judge --live
        else:
            judge_stale(self.store, "p-1", MONTH, NOW_MS)  # the live re-judge (kvitto serve)
        return move


def verdict_digest(store: Store) -> str:
    """The findings and billing basis the web pages read, without the judgement's clock."""
    digest = hashlib.sha256()
    for table, columns in (("verdicts", "customer, claim_id, rule, outcome, payable_minutes, "
                                        "reason"),
                           ("billing", "customer, category, payable_minutes, count")):  # fmt: skip
        rows = store.execute(f"SELECT {columns} FROM {table} WHERE provider = 'p-1' AND "
                             f"month = ? ORDER BY {columns}", (MONTH,))  # fmt: skip
        digest.update(repr((table, rows)).encode())
    return digest.hexdigest()


def rebuilt_digest(month: Month, name: str) -> str:
    """Judge a copy of the store's month whole and return its digest."""
    copy = month.root / f"{name}.db"
    source = sqlite3.connect(str(month.root / "kvitto.db"))
    target = sqlite3.connect(str(copy))
    source.backup(target)
    source.close()
    target.close()
    with open_store(f"sqlite:///{copy}") as store:
        judge(store, "p-1", MONTH, NOW_MS)
        found = verdict_digest(store)
    copy.unlink()
    return found


@pytest.mark.parametrize("live", [False, True], ids=["judge_stale", "live"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_incremental_judging_equals_a_full_rebuild_after_every_step(
    tmp_path, monkeypatch, seed, live
):
    # the live judge reads a month's claims again whole from a few changed customers on, not
    # only from an attestation's (500): both ways of catching up run in the sequences
    monkeypatch.setattr(web_live, "CLAIMS_READ_WHOLE_FROM", 2)
    month = Month(tmp_path, random.Random(seed), live)
    assert verdict_digest(month.store) == rebuilt_digest(month, "start")
    moves = []
    for number in range(16):
        moves.append(month.step())
        assert not stale.stale(month.store, "web:p-1", MONTH), moves
        assert verdict_digest(month.store) == rebuilt_digest(month, f"step-{number}"), moves
    month.store.close()


@pytest.mark.parametrize("live", [False, True], ids=["judge_stale", "live"])
def test_a_round_that_reaches_most_of_the_month_judges_it_whole_and_equal(
    tmp_path, monkeypatch, live
):
    """kvitto.web.judge judges a large month whole when a round reaches a third of it; with the
    size it takes for that lowered to nothing, the rounds here do so and stay equal."""
    monkeypatch.setattr(web_judge, "WHOLE_MONTH_FROM", 0)
    month = Month(tmp_path, random.Random(5), live)
    for number in range(6):
        move = month.step()
        assert not stale.stale(month.store, "web:p-1", MONTH), move
        assert verdict_digest(month.store) == rebuilt_digest(month, f"step-{number}"), move
    month.store.close()


def test_a_change_rejudges_only_the_customers_it_reaches(tmp_path):
    """A claim changed at c-1004 re-judges c-1004 and the customers where its staff claimed
    (T2); at c-1001 also its household (c-1002). New evidence alone reaches the household,
    not the staff's other customers. Nothing changed: nothing re-judged."""
    month = Month(tmp_path, random.Random(5))
    assert judge_stale(month.store, "p-1", MONTH, NOW_MS) == []
    rows = effective_rows(month.store, "p-1", MONTH, None).values()

    def reach(customer: str) -> set[str]:
        staff = {r["staff"] for r in rows if r["customer"] == customer}
        return {r["customer"] for r in rows if r["staff"] in staff} | {customer}

    assert reach("c-1004") - {"c-1004"}, "the seed has c-1004's staff at other customers"
    stale.touch(month.store, [("c-1004", MONTH, "2026-11-10")], claims=True)
    assert set(judge_stale(month.store, "p-1", MONTH, NOW_MS)) == reach("c-1004")
    stale.touch(month.store, [("c-1001", MONTH, "2026-11-10")], claims=True)
    assert set(judge_stale(month.store, "p-1", MONTH, NOW_MS)) == reach("c-1001") | {"c-1002"}
    stale.touch(month.store, [("c-1004", MONTH, "2026-11-10")])
    assert judge_stale(month.store, "p-1", MONTH, NOW_MS) == ["c-1004"]
    stale.touch(month.store, [("c-1002", MONTH, "2026-11-10")])
    # kvitto judge --live's round finds the month by its marks
    assert rejudge_stale(month.store, NOW_MS) == {("p-1", MONTH): ["c-1001", "c-1002"]}
    assert rejudge_stale(month.store, NOW_MS) == {}
    month.store.close()


def test_the_judges_registry_equals_registry_toml_of_the_store(tmp_path):
    """kvitto.web.judge reads the store's registry rows directly (no TOML between): the same
    Registry parse_registry makes of StoreRegistry.to_toml, households, age groups, revoked
    devices and credentials, a phone's key and an entrance lock included."""
    store = open_store(f"sqlite:///{tmp_path / 'kvitto.db'}")
    rows = StoreRegistry(store)
    rows.add_customer("c-1001", household="h-1", age_group="65+")
    rows.add_customer("c-1002", household="h-1")
    rows.add_customer("c-1003", age_group="<65")
    for number, customer in enumerate(("c-1001", "c-1002", "c-1003")):
        key = hashlib.sha256(customer.encode()).digest()
        rows.add_device(f"tag-{number}", customer, "tag" if number else "lock", key,
                        installed="2026-10-01")  # fmt: skip
    rows.revoke_device("tag-2", "2026-11-20")
    rows.add_credential("AB" * 16, "s-07", "p-1", "badge")
    rows.revoke_credential("ab" * 16, "2026-11-10")
    rows.add_credential("cd" * 16, "s-08", "p-1", "phone", key_material=bytes(range(32)))
    rows.add_credential("ef" * 16, "s-09", "p-2", "ntag424")
    add_entrance_lock(rows, "lock-entre", "b-1", ["c-1001", "c-1003"], bytes(range(1, 33)))
    expected = parse_registry(rows.to_toml(), "registry.toml")
    found = case_registry(rows.customers(), rows.devices(), rows.credentials(), "store")
    assert found == expected
    # part of the month: an entrance lock serves the customers the part holds
    some = [c for c in rows.customers() if c.id != "c-1003"]
    devices = [d for d in rows.devices() if {"c-1001", "c-1002"}.intersection(d.served)]
    part = parse_registry(rows.to_toml(some, devices, rows.credentials()), "registry.toml")
    assert case_registry(some, devices, rows.credentials(), "store") == part
    assert part.devices["lock-entre"].customers == ("c-1001",)
    assert found.devices["tag-2"].revoked is not None
    assert found.credentials["cd" * 16].public_key == bytes(range(32))


def _x6_verdicts(store: Store) -> dict[str, list[str]]:
    rows = store.execute("SELECT claim_id, outcome FROM verdicts WHERE provider = 'p-1' AND "
                         "month = ? AND rule = 'X6' ORDER BY claim_id", (MONTH,))  # fmt: skip
    found: dict[str, list[str]] = {}
    for claim_id, outcome in rows:
        found.setdefault(str(claim_id), []).append(str(outcome))
    return found


def test_x6_reads_last_months_stored_claims_and_a_change_to_them_rejudges(tmp_path):
    """Norrköping X6 (004 "ersättning från fjärde dagen"): an urgent need begun 29 October is
    on its fourth and fifth day on 1 and 2 November, paid as granted from 1 November. The web's
    judge reads October's stored claims of the need; withdrawing one of them, or importing
    one, marks November and re-judges it equal to a whole judgement."""
    b = Bundle(tmp_path / "case", start_boot_at="2026-10-20T06:00")
    b.customer("c-1003")
    b.device("tag-1003", "c-1003")
    b.credential("s-07", provider="p-1")
    b.order("c-1003", "egenvard", 600, valid_from="2026-11-01")
    for day in ("2026-10-29", "2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"):
        b.claim(f"u-{day[5:]}", "c-1003", "s-07", "egenvard", f"{day}T10:00", f"{day}T10:30",
                reason="bradskande")  # fmt: skip
    b.write()
    store = open_store(f"sqlite:///{tmp_path / 'kvitto.db'}")
    load_case(store, b.root, provider="p-1", municipality="norrkoping", now_ms=NOW_MS)
    add_user(store, "samordnare-p1", "coordinator", PASSWORD, provider="p-1")
    judge(store, "p-1", MONTH, NOW_MS)
    assert _x6_verdicts(store) == {}  # days 4 and 5, granted

    class Copy:  # what rebuilt_digest reads of a Month
        root = tmp_path

    user = get_user(store, "samordnare-p1")
    assert user is not None
    Scope(store, user, NOW).withdraw("u-10-29", "fel-insats", "")
    assert judge_stale(store, "p-1", MONTH, NOW_MS) == ["c-1003"]
    assert _x6_verdicts(store) == {"u-11-01": ["reject"]}  # now day 3
    assert verdict_digest(store) == rebuilt_digest(Copy(), "withdrawn")  # type: ignore[arg-type]

    def late(claim_id: str, day: str) -> int:
        path = tmp_path / f"{claim_id}.csv"
        with open(path, "w", newline="") as out:
            writer = csv.DictWriter(out, CLAIM_FIELDS, lineterminator="\n")
            writer.writeheader()
            row = {name: "" for name in CLAIM_FIELDS}
            row.update(claim_id=claim_id, customer="c-1003", staff="s-07", activity="egenvard",
                       start=f"{day}T10:00+01:00", end=f"{day}T10:30+01:00",
                       registered_via="manual", registered_at="2026-11-03T09:00+01:00",
                       reason="bradskande")  # fmt: skip
            writer.writerow(row)
        return import_claims(store, "p-1", path, provider_profile(store, "p-1"), NOW_MS)

    # 28 October lies beyond X6's look-back (three days before 1 November): not November's
    late("u-10-28", "2026-10-28")
    assert judge_stale(store, "p-1", MONTH, NOW_MS) == []
    late("u-10-29b", "2026-10-29")  # 29 October registered again: 1 November is day 4 again
    assert judge_stale(store, "p-1", MONTH, NOW_MS) == ["c-1003"]
    assert _x6_verdicts(store) == {}
    assert verdict_digest(store) == rebuilt_digest(Copy(), "imported")  # type: ignore[arg-type]
    store.close()

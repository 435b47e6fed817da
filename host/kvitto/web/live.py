"""The live judge (`kvitto judge --live`): a judge that keeps each month's decoded events and
parsed claims between rounds and reads only what changed since its last round.

    live = LiveJudge(store)
    while True:
        live.round(now_ms)          # as judge.rejudge_stale, {(provider, month): customers}

Each round judges what judge.judge_stale judges (the stale customers and their reach), from
the inputs kept here (KeptInputs) instead of the store's rows read again; the verdict is the
same (tests/test_incremental.py runs one LiveJudge through every step of its sequences). Per
round, after the marks are read (kvitto.store.stale), the inputs catch up:

- claims: a customer's claims are read and parsed again when its `touched.claims` version
  moved past the one read before its claims were (an import, a correction, a registration, a
  withdrawal, an attestation, a decision), all of the month's on the first round;
- events: the rows received since the last round (the events_received index, a few seconds'
  margin for commits that lag their receipt) are added by (device, seq); a device whose window
  of Store.events moved (an older seq received late) is read again whole, and so is one whose
  stored count differs from the kept one when a judgement reads it (a commit later than the
  margin). Devices are read when a round first needs them.

Neither depends on which customers this judge finds stale: the web app's judge (judge_stale,
after a correction) keeps the same scope and may judge a customer in between.

The registry, orders, door proofs, decisions and the earlier months' urgent claims X6 looks back
at are read each round as judge reads them.

What is kept is hundreds of thousands of objects (bench/live.py: ~390 MiB for a 10k-customer
month), which Python's cyclic collector would walk whole in each of its full collections
(0.44 s each, every few rounds, measured). After each round the judge collects what that round
left and freezes the rest (gc.freeze): later collections walk only what is new. The kept
objects hold no cycles, so what a refresh replaces is freed by its reference count all the
same. `kvitto judge --live` runs in a process of its own; run_rules, which freezes and thaws
around each customer otherwise, leaves that to it (kvitto.verify.rules.CALLER_FREEZES).
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from typing import Any

from kvitto.evidence.events import Event, EventVerifier
from kvitto.store.db import Store
from kvitto.store.registry import Registry as StoreRegistry
from kvitto.verify import rules
from kvitto.verify.case import Claim, Registry
from kvitto.verify.check import STORE_WINDOW_MARGIN
from kvitto.verify.workdays import month_bounds, parse_month
from kvitto.web.claims import apply_records, to_claims
from kvitto.web.judge import (
    StoreInputs,
    case_registry,
    judge_stale,
    provider_customers,
    stale_months,
)
from kvitto.web.records import CLAIM_KINDS, records

# Rows received this long before the newest seen are read again each round: an intake commits
# a batch a moment after it stamped its receipt. A later commit is found by the count check.
RECEIVED_MARGIN_MS = 2_000
# A month no round judged for this long is forgotten (read again whole when it changes): the
# months before stay judged, but their changes are rare and each holds hundreds of MiB.
FORGET_AFTER_S = 3_600
# More customers than this with changed claims: the month's claims are read again whole.
CLAIMS_READ_WHOLE_FROM = 500

Decoded = tuple[bytes, Event | None]
Received = tuple[int | None, int]


@dataclass
class DeviceEvents:
    """One device's rows of Store.events(device, received_since): by seq, the message decoded
    and (t, received_at); `total`: the device's rows in the store (all seqs) when last read."""

    since: int
    first: int | None = None  # the window's lowest seq (Store.events' received_since)
    total: int = 0
    rows: dict[int, tuple[bytes, Event | None, int | None, int]] = field(default_factory=dict)


class KeptInputs(StoreInputs):
    """StoreInputs of one provider's month kept between rounds (see the module docstring)."""

    def __init__(self, store: Store, provider: str, month: str):
        super().__init__(store, provider, month)
        # every device's key a round's registry held: the events decoded as
        # visits.decode_stored decodes them (a device's key never changes)
        self.keys: dict[str, bytes] = {}
        self.verifier = EventVerifier(self.keys.get, check_signatures=False)
        # customer → its claims keyed by their place in effective_rows' order
        self.kept_claims: dict[str, list[tuple[tuple[Any, ...], Claim]]] = {}
        self.claims_version: dict[str, int] = {}
        self.claims_read = False
        self.devices: dict[str, DeviceEvents] = {}
        self.received_mark: int | None = None

    # -- catching up ---------------------------------------------------------------------------

    def refresh(self) -> None:
        self._refresh_claims()
        self._refresh_events()

    def _refresh_claims(self) -> None:
        # the versions before the rows: a change committed between is read again next round
        versions = {
            str(customer): int(version)
            for customer, version in self.store.execute(
                "SELECT customer, claims FROM touched WHERE month = ?", (self.month,)
            )
        }
        if not self.claims_read:
            customers = None  # the first round reads the month's claims whole
        else:
            # a customer never marked has no claims: every claim's import marks it
            customers = sorted(
                c for c, version in versions.items() if version > self.claims_version.get(c, 0)
            )  # fmt: skip
            if not customers:
                return
            if len(customers) > CLAIMS_READ_WHOLE_FROM:
                customers = None  # an attestation marks them all: one read, not a long IN list
        read = self._read_claims(customers)
        names = {*read, *versions} if customers is None else customers
        for customer in names:
            self.kept_claims[customer] = read.get(customer, [])
            self.claims_version[customer] = versions.get(customer, 0)
        self.claims_read = True

    def _read_claims(
        self, customers: list[str] | None
    ) -> dict[str, list[tuple[tuple[Any, ...], Claim]]]:
        """customer → its claims as effective_rows makes them (of `customers`, all when None),
        each with its place in effective_rows' order: imported claims by (imported_at,
        start_at, claim_id), registered ones after them by their record."""
        sql = ("SELECT claim_id, fields, month, imported_at, start_at FROM claims "
               "WHERE provider = ? AND month = ?")  # fmt: skip
        params: list[Any] = [self.provider, self.month]
        if customers is not None:
            sql += f" AND customer IN ({', '.join('?' * len(customers))})"
            params += customers
        originals: dict[str, dict[str, str]] = {}
        place: dict[str, tuple[Any, ...]] = {}
        for claim_id, fields, month, imported_at, start_at in self.store.execute(
            sql + " ORDER BY imported_at, start_at, claim_id", tuple(params)
        ):
            if month == self.month:
                originals[str(claim_id)] = json.loads(fields)
                place[str(claim_id)] = (0, int(imported_at), int(start_at), str(claim_id))
        wanted = None if customers is None else set(customers)
        month_records = [
            r
            for r in records(
                self.store,
                chains=[self.provider],
                month=self.month,
                kinds=(*CLAIM_KINDS, "attest"),
            )  # fmt: skip
            if r.kind == "attest" or wanted is None or r.customer in wanted
        ]
        for record in sorted(month_records, key=lambda r: (r.at, r.chain, r.seq)):
            if record.kind == "register":
                place.setdefault(record.claim_id, (1, record.at, record.chain, record.seq))
        found: dict[str, list[tuple[tuple[Any, ...], Claim]]] = {}
        rows = apply_records(originals, month_records)
        by_customer: dict[str, dict[str, dict[str, str]]] = {}
        for claim_id, row in rows.items():
            customer = str(row.get("customer") or "").strip()
            by_customer.setdefault(customer, {})[claim_id] = row
        for customer, own in by_customer.items():
            found[customer] = [(place[c.claim_id], c) for c in to_claims(own, self.source)]
        return found

    def _refresh_events(self) -> None:
        if not self.devices:
            self.received_mark = self._newest_received()
            return
        mark = self.received_mark
        newest = self._newest_received()
        if mark is not None and newest is not None:
            again: set[str] = set()
            for device, seq, t, received_at, message in self.store.execute(
                "SELECT device, seq, t, received_at, message FROM events "
                "WHERE received_at >= ? AND received_at <= ?",
                (mark - RECEIVED_MARGIN_MS, newest),
            ):
                held = self.devices.get(str(device))
                if held is None or int(seq) in held.rows or str(device) in again:
                    continue
                if held.first is None or int(seq) < held.first:
                    again.add(str(device))  # the window of Store.events moved: read it again
                    continue
                body = bytes(message)
                held.rows[int(seq)] = (body, self.verifier.event(body), t, int(received_at))
                held.total += 1
            for device in again:
                self.devices.pop(device, None)
        self.received_mark = newest if newest is not None else mark

    def _newest_received(self) -> int | None:
        rows = self.store.execute("SELECT MAX(received_at) FROM events")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def _check_counts(self, devices: list[str]) -> None:
        """Forget the kept `devices` whose stored rows are more than those kept (committed
        after the margin, or while another judge judged their customer): they are read again."""
        for start in range(0, len(devices), 500):
            chunk = devices[start : start + 500]
            counts = dict(self.store.execute(
                f"SELECT device, COUNT(*) FROM events WHERE device IN "
                f"({', '.join('?' * len(chunk))}) GROUP BY device", tuple(chunk),
            ))  # fmt: skip
            for device in chunk:
                if int(counts.get(device, 0)) != self.devices[device].total:
                    self.devices.pop(device)

    # -- what a round reads ------------------------------------------------------------------

    def claims_of(self, customers: list[str]) -> list[Claim]:
        return [c for _, c in sorted(p for x in customers for p in self.kept_claims.get(x, ()))]

    def claims(
        self, context: list[str] | None, wanted: set[str]
    ) -> tuple[list[Claim], list[Claim]]:
        scope = self.kept_claims.keys() if context is None else context
        ours = sorted(p for x in scope if x in wanted for p in self.kept_claims.get(x, ()))
        staff = {c.staff for _, c in ours if c.staff}
        others = sorted(
            p for x in scope if x not in wanted for p in self.kept_claims.get(x, ())
            if p[1].staff in staff
        )  # fmt: skip
        return [c for _, c in ours], [c for _, c in others]

    def events(
        self, registry: Registry, devices: list[str], since: int
    ) -> tuple[list[Decoded], dict[tuple[str, int], Received]]:
        self.keys.update((d.id, d.public_key) for d in registry.devices.values())
        # every device judged from is checked complete against the store, read after the marks
        self._check_counts(sorted(d for d in set(devices) if d in self.devices))
        decoded: list[Decoded] = []
        received: dict[tuple[str, int], Received] = {}
        for device in devices:
            held = self.devices.get(device)
            if held is None or held.since != since:
                held = self.devices[device] = self._read_device(device, since)
            for seq in sorted(held.rows):
                message, event, t, at = held.rows[seq]
                decoded.append((message, event))
                received[(device, seq)] = (t, at)
        return decoded, received

    def _read_device(self, device: str, since: int) -> DeviceEvents:
        held = DeviceEvents(since)
        # counted before the rows are read: a row committed between is kept but not counted,
        # and the count check reads the device again (never the other way round)
        total = self.store.execute("SELECT COUNT(*) FROM events WHERE device = ?", (device,))
        held.total = int(total[0][0])
        rows = self.store.events(device=device, received_since=since)
        for row in rows:
            body = bytes(row[6])
            held.rows[int(row[1])] = (body, self.verifier.event(body), row[3], int(row[4]))
        held.first = min(held.rows) if held.rows else None
        return held


class LiveJudge:
    """judge.rejudge_stale with each month's inputs kept between rounds (KeptInputs)."""

    def __init__(self, store: Store, freeze: bool = True):
        """`freeze`: settle the collector after each round (module docstring); a process of
        its own only (a test's process keeps its collector as it is)."""
        self.store, self.freeze = store, freeze
        self.months: dict[tuple[str, str], KeptInputs] = {}
        self.used: dict[tuple[str, str], float] = {}  # when a round last judged the month

    def round(self, now_ms: int) -> dict[tuple[str, str], list[str]]:
        """One round: every judged month with a changed customer re-judged; (provider, month) →
        the customers judged."""
        judged = {
            (provider, month): judge_stale(
                self.store, provider, month, now_ms, self._inputs(provider, month)
            )
            for provider, month in stale_months(self.store)
        }
        now = time.monotonic()
        for key in judged:
            self.used[key] = now
        for key in [k for k, at in self.used.items() if now - at > FORGET_AFTER_S]:
            # a month nothing changed in for a while: its memory back, read again if it changes
            del self.months[key], self.used[key]
        if judged and self.freeze:
            _settle()
        return judged

    def prime(self) -> int:
        """Read every judged month's claims and events now, which the first rounds would read
        otherwise (bench/live.py, before its phase); returns the events kept. `kvitto judge
        --live` does not: it reads a month when a round first judges it."""
        rows = self.store.execute("SELECT provider, month FROM judged ORDER BY provider, month")
        registry_rows = StoreRegistry(self.store)
        held = 0
        for provider, month in rows:
            inputs = self._inputs(str(provider), str(month))
            inputs.refresh()
            ours = set(provider_customers(self.store, str(provider)))
            customers = [c for c in registry_rows.customers() if c.id in ours]
            devices = [d for d in registry_rows.devices() if ours.intersection(d.served)]
            registry = case_registry(customers, devices, registry_rows.credentials(),
                                     f"store registry of {provider}")  # fmt: skip
            start, _ = month_bounds(*parse_month(str(month)))
            since = int((start - STORE_WINDOW_MARGIN).timestamp() * 1000)
            held += len(inputs.events(registry, [d.id for d in devices], since)[0])
        if self.freeze:
            _settle()
        return held

    def _inputs(self, provider: str, month: str) -> KeptInputs:
        inputs = self.months.get((provider, month))
        self.used[(provider, month)] = time.monotonic()
        if inputs is None:
            inputs = self.months[(provider, month)] = KeptInputs(self.store, provider, month)
        return inputs


def _settle() -> None:
    """Collect this round's cyclic garbage, then freeze what survives (module docstring)."""
    rules.CALLER_FREEZES = True  # run_rules' own freeze would thaw it all after each customer
    gc.collect()
    gc.freeze()

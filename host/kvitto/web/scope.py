"""The scoped data layer: every page reads and writes through a Scope built from the session's
user, and only a Scope decides what that user may see. Provider isolation lives here, once.

    scope = Scope(store, user, now)                # user: kvitto.web.accounts.User
    scope.providers                                 # coordinator: [own]; auditor: the municipality's
    claim = scope.claim("p-1", "k-08")              # NotFound unless p-1 is visible to the user
    scope.correct("p-1", "k-08", "annan-tid", "…", start=…, end=…)   # a record, then re-judged

A coordinator sees one provider, an auditor every provider of one municipality (read-only on
evidence and claims; decides follow-ups), an admin users and the registry but no claims. An id
the user may not see is NotFound, the same answer as an id that does not exist: a page turns it
into 404, so no page can tell a foreign id from a missing one.

The gate itself (the user's providers, NotFound, Refused) is kvitto.web.visibility.Visibility,
which Scope extends; the rows the deviation pages list are kvitto.web.rows.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from typing import Any

from kvitto.errors import KvittoError
from kvitto.verify.case import CaseError, Claim
from kvitto.verify.workdays import local, local_at
from kvitto.web import records as chain
from kvitto.web.claims import CORRECTABLE, check_times, claims_csv, to_claims
from kvitto.web.deadlines import DECISIONS, REASON_CODES, Deadline
from kvitto.web.judge import decisions, effective_rows, judge_stale, refresh_deadlines
from kvitto.web.lock_access import mark_locks
from kvitto.web.personnummer import find_personnummer
from kvitto.web.rows import EventView, Row
from kvitto.web.visibility import NotFound, Refused, Visibility, moment, ms

EVIDENCE_MARGIN = timedelta(hours=1)  # around a claimed visit in the deviation queue
PAGE = 50  # rows per page of a long list (customers on the day board: DAY_PAGE)
DAY_PAGE = 25
MAX_TEXT = 500


class Scope(Visibility):
    # -- deviations ---------------------------------------------------------------------

    def _rows(self, sql_rows: list[tuple[Any, ...]]) -> list[Row]:
        out = []
        for r in sql_rows:
            start = moment(int(r[10])) if r[10] else None
            end = moment(int(r[11])) if r[11] else None
            deadline = Deadline(str(r[12]), "", moment(int(r[13]))) if r[12] else None
            out.append(Row(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                           int(r[6]), str(r[7]), str(r[8]), str(r[9]), start, end, deadline))  # fmt: skip
        return out

    _VERDICT = (
        "provider, month, customer, claim_id, rule, outcome, payable_minutes, reason, "
        "activity, staff, start_at, end_at, deadline_rule, deadline_at"
    )

    def queue(self, offset: int = 0) -> tuple[list[Row], int]:
        """The coordinator's findings in the open months, nearest deadline first: each row's
        deadline as of now, which its stored one is once passed deadlines are moved on
        (refresh_deadlines), so the order holds across pages."""
        provider = self.own
        months = self.open_months(provider)
        if not months:
            return [], 0
        refresh_deadlines(self.store, provider, months, self.now)
        marks = ", ".join("?" * len(months))
        total = int(
            self.store.execute(
                f"SELECT COUNT(*) FROM verdicts WHERE provider = ? AND month IN ({marks})",
                (provider, *months),
            )[0][0]
        )
        rows = self._rows(
            self.store.execute(
                f"SELECT {self._VERDICT} FROM verdicts WHERE provider = ? AND month IN ({marks}) "
                "ORDER BY deadline_at, start_at, claim_id, rule LIMIT ? OFFSET ?",
                (provider, *months, PAGE, max(0, offset)),
            )
        )
        for row in rows:
            if row.start is not None and row.end is not None:
                # the visit's evidence timeline, as the collector stored it (checked again on
                # the claim's own page)
                row.timeline = self.evidence(
                    row.customer, row.start - EVIDENCE_MARGIN, row.end + EVIDENCE_MARGIN, False
                )
        return rows, total

    def findings(self, provider: str, month: str, customer: str | None = None) -> list[Row]:
        self.provider(provider)
        sql = f"SELECT {self._VERDICT} FROM verdicts WHERE provider = ? AND month = ?"
        params: list[Any] = [provider, month]
        if customer is not None:
            sql += " AND customer = ?"
            params.append(customer)
        rows = self._rows(self.store.execute(sql + " ORDER BY start_at, claim_id, rule", params))
        decided = decisions(self.store, provider, month)
        for row in rows:
            row.decision = decided.get((row.claim_id, row.rule), {})
        return rows

    def claim(self, provider: str, claim_id: str) -> tuple[str, Claim, dict[str, str]]:
        """(month, the claim as corrected, its effective claims.csv row); NotFound if the
        claim is not the provider's, the provider not the user's, or it was withdrawn."""
        self.provider(provider)
        rows = self.store.execute(
            "SELECT month, customer FROM claims WHERE provider = ? AND claim_id = ?",
            (provider, claim_id),
        )
        if not rows:
            registered = chain.records(
                self.store, chains=[provider], kinds=("register",), provider=provider
            )
            match = [r for r in registered if r.claim_id == claim_id]
            if not match:
                raise NotFound(claim_id)
            month, customer = match[0].month, match[0].customer
        else:
            month, customer = str(rows[0][0]), str(rows[0][1])
        effective = effective_rows(self.store, provider, month, [customer], [claim_id])
        if claim_id not in effective:
            raise NotFound(claim_id)
        claim = to_claims({claim_id: effective[claim_id]}, "store")[0]
        return month, claim, effective[claim_id]

    def history(self, provider: str, claim_id: str) -> list[chain.Record]:
        self.provider(provider)
        return [
            r
            for r in chain.records(self.store, chains=[provider], provider=provider)
            if r.claim_id == claim_id
        ]

    # -- evidence -----------------------------------------------------------------------

    def evidence(
        self, customer: str, start: datetime, end: datetime, verify: bool = True
    ) -> list[EventView]:
        """The signed events of the customer's devices between start and end, each checked
        against its device's key again when `verify` (signature status for the auditor; the
        day board shows the stored events, which the collector verified on arrival)."""
        from kvitto.evidence.cose import EvidenceError
        from kvitto.evidence.events import verify_event

        self.customer_provider(customer)
        devices = {
            str(row[0]): (str(row[1]), bytes(row[2]))
            for row in self.store.execute(
                "SELECT id, role, public_key FROM devices WHERE customer = ?", (customer,)
            )
        }
        if not devices:
            return []
        marks = ", ".join("?" * len(devices))
        message = "message" if verify else "NULL"
        rows = self.store.execute(
            f"SELECT device, seq, type, t, cred, chain, {message} FROM events "
            f"WHERE device IN ({marks}) AND t >= ? AND t <= ? ORDER BY t, device, seq",
            (*devices, int(start.timestamp()), int(end.timestamp())),
        )
        creds = sorted({bytes(row[4]).hex() for row in rows if row[4]})
        staff_of = {
            str(row[0]): str(row[1])
            for row in (
                self.store.execute(
                    f"SELECT id, staff FROM credentials WHERE id IN ({', '.join('?' * len(creds))})",
                    tuple(creds),
                )
                if creds
                else []
            )
        }
        out = []
        for device, seq, kind, t, cred, chain_ok, message in rows:
            role, key = devices[device]
            via, signature = "", "unchecked"
            if verify:
                try:
                    event = verify_event(bytes(message), key)
                    signature = "ok"
                    x = getattr(event, "x", None) or {}
                    via = str(x.get("via", "")) if isinstance(x, dict) else ""
                except EvidenceError:
                    signature = "bad"
            credential = bytes(cred).hex() if cred else ""
            out.append(EventView(device, role, int(seq), str(kind),
                                 moment(int(t) * 1000) if t is not None else None,
                                 credential[:8], staff_of.get(credential, ""), via,
                                 None if chain_ok is None else int(chain_ok), signature))  # fmt: skip
        return out

    def door_evidence(self, provider: str, claim_id: str) -> list[dict[str, Any]]:
        """The door proofs a claim registered at the door rests on (kvitto.web.door), each
        re-checked now: the door's URL with its device's key or its sticker's keys, and the
        passkey's assertion bound to it."""
        from kvitto.evidence.door import AwayProof, DoorProof, verify_away_proof, verify_door_proof

        ids = sorted({int(p) for r in self.history(provider, claim_id)
                      if r.kind == "register" and r.body.get("via") in ("door", "away")
                      for p in r.body.get("proofs", [])})  # fmt: skip
        if not ids:
            return []
        rows = self.store.execute(
            "SELECT id, action, at, customer, credential, proof FROM door_proofs WHERE "
            f"provider = ? AND id IN ({', '.join('?' * len(ids))}) ORDER BY at, id",
            (provider, *ids),
        )
        out = []
        for proof_id, action, at, customer, credential, text in rows:
            if action == "away":  # RULES E2: the passkey signed the registration, no door
                try:
                    verify_away_proof(AwayProof.from_json(json.loads(text)))
                    status = "ok"
                except KvittoError:
                    status = "bad"
                out.append({"id": int(proof_id), "action": "away", "at": moment(int(at)),
                            "kind": "away", "door": "", "credential": str(credential),
                            "status": status})  # fmt: skip
                continue
            proof = DoorProof.from_json(json.loads(text))
            door = proof.url.partition("?")[0].rsplit("/", 1)[-1]
            status = "ok"
            try:
                if proof.kind == "device":
                    key = self.store.execute(
                        "SELECT public_key FROM devices WHERE id = ? AND customer = ?",
                        (door, customer),
                    )
                    verify_door_proof(proof, device_key=bytes(key[0][0]) if key else None)
                else:
                    keys = self.store.execute(
                        "SELECT meta_key, file_key FROM stickers WHERE id = ? AND customer = ?",
                        (door, customer),
                    )
                    if not keys:
                        raise KvittoError(f"sticker {door} is not {customer}'s")
                    verify_door_proof(proof, sticker_keys=(bytes(keys[0][0]), bytes(keys[0][1])))
            except KvittoError:
                status = "bad"
            out.append({"id": int(proof_id), "action": str(action), "at": moment(int(at)),
                        "kind": proof.kind, "door": door, "credential": str(credential),
                        "status": status})  # fmt: skip
        return out

    # -- the day board ------------------------------------------------------------------

    def day(self, day: date, after: str = "") -> dict[str, Any]:
        """The day's visits per customer (customers in id order after `after`, a page at a
        time): plan, claims, evidence, and what needs attention."""
        provider = self.own
        profile = self.profile(provider)
        begin = local_at(day, time(0))
        end = local_at(day + timedelta(days=1), time(0))
        window = (provider, ms(begin), ms(end))
        # the provider's customers in order, those with a plan, a claim or an alarm call that
        # day, one page (indexes by customer and time: the page costs the same on any day)
        found = self.store.execute(
            "SELECT p.customer FROM customer_providers p WHERE p.provider = ? AND p.customer > ? "
            "AND (EXISTS (SELECT 1 FROM plan l WHERE l.provider = p.provider "
            "AND l.customer = p.customer AND l.start_at >= ? AND l.start_at < ?) "
            "OR EXISTS (SELECT 1 FROM claims c WHERE c.provider = p.provider "
            "AND c.customer = p.customer AND c.start_at >= ? AND c.start_at < ?) "
            "OR EXISTS (SELECT 1 FROM devices d JOIN events e ON e.device = d.id "
            "WHERE d.customer = p.customer AND d.role = 'alarm' AND e.t >= ? AND e.t < ? "
            "AND e.type = 'alarm_call')) ORDER BY p.customer LIMIT ?",
            (provider, after, ms(begin), ms(end), ms(begin), ms(end),
             int(begin.timestamp()), int(end.timestamp()), DAY_PAGE + 1),
        )  # fmt: skip
        customers = [str(r[0]) for r in found]
        shown = customers[:DAY_PAGE]
        more = shown[-1] if len(customers) > DAY_PAGE else ""
        marks = ", ".join("?" * len(shown)) or "''"
        plan = self.store.execute(
            "SELECT customer, start_at, end_at, activities FROM plan WHERE provider = ? "
            f"AND start_at >= ? AND start_at < ? AND customer IN ({marks})",
            (*window, *shown),
        )  # no ORDER BY: it would steer the planner to the day's whole index range
        plan.sort(key=lambda r: r[1])
        claims = self.store.execute(
            "SELECT customer, claim_id, start_at, end_at, fields FROM claims WHERE provider = ? "
            f"AND start_at >= ? AND start_at < ? AND customer IN ({marks})",
            (*window, *shown),
        )
        claims.sort(key=lambda r: r[2])
        response = int(profile.rules.get("A3", {}).get("minutes", 30))
        late_after = timedelta(minutes=30)
        board = []
        plan_of: dict[str, list[tuple[Any, ...]]] = {}
        for r in plan:
            plan_of.setdefault(str(r[0]), []).append(r)
        claims_of: dict[str, list[tuple[Any, ...]]] = {}
        for r in claims:
            claims_of.setdefault(str(r[0]), []).append(r)
        for customer in shown:
            events = self.evidence(customer, begin, end, verify=False)
            visits = [
                {"start": moment(int(r[1])), "end": moment(int(r[2])), "activities": r[3]}
                for r in plan_of.get(customer, [])
            ]
            arrivals = [e.at for e in events if e.type in ("arrive", "unlock") and e.at]
            flags = []
            for visit in visits:
                due = visit["start"] + late_after
                arrived = any(visit["start"] - late_after <= a <= visit["end"] for a in arrivals)
                visit["arrived"] = arrived
                if not arrived and self.now > due:
                    flags.append(("late", visit["start"]))
            calls = [e for e in events if e.type == "alarm_call" and e.at]
            checkins = [e.at for e in events if e.type == "alarm_checkin" and e.at]
            for call in calls:
                assert call.at is not None
                answered = any(call.at <= c <= call.at + timedelta(minutes=response)
                               for c in checkins)  # fmt: skip
                if not answered and (self.now > call.at + timedelta(minutes=response)
                                     or any(c > call.at for c in checkins)):  # fmt: skip
                    flags.append(("alarm", call.at))
            board.append({
                "customer": customer,
                "plan": visits,
                "claims": [
                    {"claim_id": r[1], "start": moment(int(r[2])), "end": moment(int(r[3])),
                     "activity": json.loads(r[4]).get("activity", "")}
                    for r in claims_of.get(customer, [])
                ],
                "events": events,
                "flags": flags,
            })  # fmt: skip
        mark_locks(self.store, board, begin, end)  # issue #23: denied outside a visit window
        return {"rows": board, "more": more, "after": after, "response_minutes": response}

    def last_event(self, since: int | None = None) -> int:
        """The newest receive time (Unix ms) among the coordinator's customers' events received
        after `since` (or `since` itself when none was): the live board refreshes when it
        grows. Without `since`, the store's newest receive time overall, a cursor to start from
        (a time, no data)."""
        provider = self.own
        if since is None:
            rows = self.store.execute("SELECT MAX(received_at) FROM events")
            return int(rows[0][0] or 0)
        rows = self.store.execute(
            "SELECT MAX(e.received_at) FROM events e JOIN devices d ON d.id = e.device "
            "JOIN customer_providers p ON p.customer = d.customer "
            "WHERE e.received_at > ? AND p.provider = ?",
            (since, provider),
        )
        return max(since, int(rows[0][0] or 0))

    # -- month --------------------------------------------------------------------------

    def billing(self, provider: str, month: str) -> list[dict[str, Any]]:
        self.provider(provider)
        rows = self.store.execute(
            "SELECT customer, category, payable_minutes, count FROM billing "
            "WHERE provider = ? AND month = ? ORDER BY customer, category",
            (provider, month),
        )
        return [
            {"customer": r[0], "category": r[1], "payable_minutes": int(r[2]), "count": int(r[3])}
            for r in rows
        ]

    def summary(self, provider: str, month: str) -> dict[str, Any]:
        """Payable minutes per category, findings per rule, the share of manual claims."""
        self.provider(provider)
        categories = self.store.execute(
            "SELECT category, SUM(payable_minutes), SUM(count), COUNT(DISTINCT customer) "
            "FROM billing WHERE provider = ? AND month = ? GROUP BY category ORDER BY category",
            (provider, month),
        )
        per_rule = self.store.execute(
            "SELECT rule, outcome, COUNT(*) FROM verdicts WHERE provider = ? AND month = ? "
            "GROUP BY rule, outcome ORDER BY rule, outcome",
            (provider, month),
        )
        counted = self.store.execute(
            "SELECT claims, manual FROM claim_counts WHERE provider = ? AND month = ?",
            (provider, month),
        )
        imported, imported_manual = (int(counted[0][0]), int(counted[0][1])) if counted else (0, 0)
        # as imported, plus the after-the-fact registrations (manual), less the withdrawn
        changed = chain.records(
            self.store, chains=[provider], month=month, kinds=("register", "withdraw")
        )
        registered = sum(r.kind == "register" for r in changed)
        at_door = sum(r.kind == "register" and r.body.get("via") == "door" for r in changed)
        withdrawn = len(changed) - registered
        claims = imported + registered - withdrawn
        manual = imported_manual + registered - at_door
        judged = self.store.execute(
            "SELECT judged_at FROM judged WHERE provider = ? AND month = ?", (provider, month)
        )
        return {
            "categories": [
                {"category": r[0], "payable_minutes": int(r[1] or 0), "count": int(r[2] or 0),
                 "customers": int(r[3])} for r in categories
            ],
            "rules": [{"rule": r[0], "outcome": r[1], "count": int(r[2])} for r in per_rule],
            "claims": claims,
            "manual": manual,
            "manual_share": (manual / claims) if claims else 0.0,
            "attested": self.attested(provider, month),
            "judged_at": moment(int(judged[0][0])) if judged else None,
        }  # fmt: skip

    def attested(self, provider: str, month: str) -> chain.Record | None:
        found = chain.records(self.store, chains=[provider], month=month, kinds=("attest",))
        return found[-1] if found else None

    def follow_ups(self, provider: str, month: str) -> list[Row]:
        return [r for r in self.findings(provider, month) if r.outcome == "follow_up"
                or r.decision]  # fmt: skip

    def claims_csv(self, provider: str, month: str) -> str:
        return claims_csv(effective_rows(self.store, self.provider(provider), month, None))

    # -- writes: people's actions as records --------------------------------------------

    def _text(self, text: str) -> str:
        text = (text or "").strip()
        if len(text) > MAX_TEXT:
            raise Refused(f"text: at most {MAX_TEXT} characters")
        if find_personnummer(text):
            raise Refused("personnummer")
        return text

    def _reason(self, code: str) -> str:
        if code not in REASON_CODES:
            raise Refused("reason_code")
        return code

    def _claim_record(self, kind: str, claim_id: str, body: dict[str, Any]) -> chain.Record:
        provider = self.own
        month, claim, _ = self.claim(provider, claim_id)
        record = chain.append(
            self.store, chain=provider, actor=self.user.name, kind=kind, at=ms(self.now),
            body=body, provider=provider, municipality=self.user.municipality,
            customer=claim.customer, claim_id=claim_id, month=month,
        )  # fmt: skip
        judge_stale(self.store, provider, month, ms(self.now))
        return record

    def explain(self, claim_id: str, reason_code: str, text: str) -> chain.Record:
        body = {"reason_code": self._reason(reason_code), "text": self._text(text)}
        return self._claim_record("explain", claim_id, body)

    def withdraw(self, claim_id: str, reason_code: str, text: str) -> chain.Record:
        body = {"reason_code": self._reason(reason_code), "text": self._text(text)}
        return self._claim_record("withdraw", claim_id, body)

    def correct(
        self, claim_id: str, reason_code: str, text: str, changes: dict[str, str]
    ) -> chain.Record:
        provider = self.own
        month, claim, row = self.claim(provider, claim_id)
        reason, note = self._reason(reason_code), self._text(text)
        after = {k: v.strip() for k, v in changes.items() if k in CORRECTABLE and v.strip()}
        for value in after.values():
            if find_personnummer(value):
                raise Refused("personnummer")
        try:
            begins, ends = check_times(
                after.get("start", row["start"]), after.get("end", row["end"])
            )
            was_start, was_end = check_times(row["start"], row["end"])
        except CaseError as error:
            raise Refused(str(error)) from None
        if "activity" in after and after["activity"] not in self.profile(provider).activities:
            raise Refused("activity")
        after.pop("start", None)
        after.pop("end", None)
        if begins != was_start:
            after["start"] = local(begins).isoformat(timespec="minutes")
        if ends != was_end:
            after["end"] = local(ends).isoformat(timespec="minutes")
        after = {k: v for k, v in after.items() if v != row.get(k, "")}
        if not after:
            raise Refused("no_change")
        before = {k: row.get(k, "") for k in after}
        body = {"reason_code": reason, "text": note, "before": before, "after": after}
        return self._claim_record("correct", claim_id, body)

    def register(
        self, customer: str, activity: str, start: str, end: str, staff: str,
        reason_code: str, text: str,
    ) -> chain.Record:  # fmt: skip
        """An after-the-fact registration: a new claim, registered manually now (D1)."""
        provider = self.own
        if self.customer_provider(customer) != provider:
            raise NotFound(customer)
        if activity not in self.profile(provider).activities:
            raise Refused("activity")
        try:
            begins, ends = check_times(start, end)
        except CaseError as error:
            raise Refused(str(error)) from None
        if find_personnummer(staff):
            raise Refused("personnummer")
        month = f"{local(begins):%Y-%m}"
        count = len(chain.records(self.store, chains=[provider], kinds=("register",))) + 1
        claim_id = f"e-{local(self.now):%Y%m%d}-{count}"
        after = {"activity": activity, "staff": staff.strip(),
                 "start": local(begins).isoformat(timespec="minutes"),
                 "end": local(ends).isoformat(timespec="minutes")}  # fmt: skip
        record = chain.append(
            self.store, chain=provider, actor=self.user.name, kind="register", at=ms(self.now),
            body={"reason_code": self._reason(reason_code), "text": self._text(text),
                  "after": after},
            provider=provider, municipality=self.user.municipality, customer=customer,
            claim_id=claim_id, month=month,
        )  # fmt: skip
        judge_stale(self.store, provider, month, ms(self.now))
        return record

    def attest(self, month: str, text: str = "") -> chain.Record:
        provider = self.own
        self.month(provider, month)
        record = chain.append(
            self.store, chain=provider, actor=self.user.name, kind="attest", at=ms(self.now),
            body={"text": self._text(text)}, provider=provider,
            municipality=self.user.municipality, month=month,
        )  # fmt: skip
        judge_stale(self.store, provider, month, ms(self.now))
        return record

    def decide(
        self, provider: str, claim_id: str, rule: str, decision: str, text: str
    ) -> chain.Record:
        if self.user.role != "auditor":
            raise NotFound("decide")
        month, claim, _ = self.claim(provider, claim_id)
        if decision not in DECISIONS:
            raise Refused("decision")
        note = self._text(text)
        if decision == "reject" and not note:
            raise Refused("reason_missing")
        if not any(r.rule == rule and r.outcome == "follow_up"
                   for r in self.findings(provider, month, claim.customer)):  # fmt: skip
            raise NotFound(rule)
        record = chain.append(
            self.store, chain=provider, actor=self.user.name, kind="decide", at=ms(self.now),
            body={"rule": rule, "decision": decision, "text": note}, provider=provider,
            municipality=self.user.municipality, customer=claim.customer, claim_id=claim_id,
            month=month,
        )  # fmt: skip
        judge_stale(self.store, provider, month, ms(self.now))
        return record

    def log_export(self, provider: str, month: str, what: str) -> None:
        self.provider(provider)
        chain.append(
            self.store, chain=provider, actor=self.user.name, kind="export", at=ms(self.now),
            body={"what": what, "role": self.user.role}, provider=provider,
            municipality=self.user.municipality, month=month,
        )  # fmt: skip

    # -- the audit log ------------------------------------------------------------------

    def log_chains(self) -> list[str]:
        if self.user.role == "admin":
            rows = self.store.execute("SELECT DISTINCT chain FROM records ORDER BY chain")
            return [str(row[0]) for row in rows]
        if self.user.role == "auditor":
            return [*self.providers, f"m:{self.user.municipality}"]
        raise NotFound("log")

    def log(self, offset: int = 0) -> tuple[list[chain.Record], list[str]]:
        chains = self.log_chains()
        every = chain.records(self.store, chains=chains)
        problems = chain.verify_chain(every)
        every.sort(key=lambda r: (r.at, r.chain, r.seq), reverse=True)
        return every[offset : offset + PAGE], problems

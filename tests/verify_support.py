"""A small case-bundle builder for verify tests: signs events with cryptography + cbor2 itself,
independent of the device code and of kvitto.evidence.events.

    b = Bundle(tmp_path); b.customer("c-1001"); b.device("tag-0042", "c-1001")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:00", "2026-10-01T08:30"); b.write()
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

STOCKHOLM = ZoneInfo("Europe/Stockholm")
CLAIM_FIELDS = (
    "claim_id,customer,staff,activity,start,end,registered_via,registered_at,approved_at,"
    "adjusted_at,double_staffing,count,reason,planned_start,planned_end,notified_at,proof"
).split(",")


def when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=STOCKHOLM)


def credential_id(staff: str) -> bytes:
    return hashlib.sha256(b"cred:" + staff.encode()).digest()[:16]


def sign(key: Ed25519PrivateKey, device: str, fields: dict[int, Any]) -> bytes:
    payload = cbor2.dumps(fields, canonical=True)
    protected = cbor2.dumps({1: -8, 4: device.encode()}, canonical=True)
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))


class Bundle:
    def __init__(
        self, root: Path, start_boot_at: str = "2026-09-30T06:00", auto_sync: bool = True
    ):
        self.root = Path(root)
        self.customers: list[dict[str, str]] = []
        self.devices: dict[str, dict[str, Any]] = {}
        self.credentials: list[dict[str, str]] = []
        self.orders: list[list[Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.messages: list[bytes] = []
        self.start_boot_at = start_boot_at
        self.auto_sync = auto_sync  # a clock_sync before any event 12 h after the last one

    # registry -----------------------------------------------------------------------------
    def customer(self, cid: str, household: str = "", age_group: str = "") -> None:
        self.customers.append({"id": cid, "household": household, "age_group": age_group})

    def device(self, did: str, customer: str, role: str = "tag", revoked: str = "") -> None:
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(did.encode()).digest())
        self.devices[did] = {
            "customer": customer, "role": role, "key": key, "seq": 0, "boot": 0,
            "boot_at": None, "sync_at": None, "prev": bytes(32), "revoked": revoked,
            "calls": 0,
        }  # fmt: skip
        self.boot(did, self.start_boot_at)

    def credential(self, staff: str, provider: str = "p-1", kind: str = "badge",
                   revoked: str = "") -> str:  # fmt: skip
        cid = credential_id(staff).hex()
        self.credentials.append(
            {"id": cid, "staff": staff, "provider": provider, "kind": kind, "revoked": revoked}
        )
        return cid

    def order(self, customer: str, activity: str, minutes: int = 1800,
              valid_from: str = "2026-01-01", valid_to: str = "2026-12-31",
              double: int = 0, exempt: int = 0) -> None:  # fmt: skip
        self.orders.append([customer, activity, minutes, valid_from, valid_to, double, exempt])

    def claim(self, claim_id: str, customer: str, staff: str, activity: str, start: str,
              end: str, **fields: Any) -> None:  # fmt: skip
        row = {name: "" for name in CLAIM_FIELDS}
        row.update(claim_id=claim_id, customer=customer, staff=staff, activity=activity,
                   start=start, end=end, registered_via="tag", registered_at=end,
                   approved_at=end)  # fmt: skip
        row.update({k: ("" if v is None else v) for k, v in fields.items()})
        self.claims.append(row)

    # evidence -----------------------------------------------------------------------------
    def _emit(self, did: str, event_type: str, at: datetime, cred: bytes | None = None,
              x: dict[str, Any] | None = None, synced: bool = True) -> bytes:  # fmt: skip
        d = self.devices[did]
        if (
            self.auto_sync
            and event_type != "clock_sync"
            and d["sync_at"] is not None
            and at.timestamp() - d["sync_at"].timestamp() > 12 * 3600
        ):
            self.sync(did, (at - timedelta(minutes=1)).isoformat())
        d["seq"] += 1
        # POSIX seconds: Stockholm wall times subtract wrongly across a DST change.
        up = int((at.timestamp() - d["boot_at"].timestamp()) * 1000)
        fields: dict[int, Any] = {0: 1, 1: did, 2: d["seq"], 3: d["boot"], 4: up,
                                  7: event_type, 9: d["prev"]}  # fmt: skip
        if synced and d["sync_at"] is not None:
            fields[5] = int(at.timestamp())
            fields[6] = int(at.timestamp() - d["sync_at"].timestamp())
        if cred is not None:
            fields[8] = cred
        if x:
            fields[10] = x
        message = sign(d["key"], did, fields)
        d["prev"] = hashlib.sha256(cbor2.dumps(fields, canonical=True)).digest()
        self.messages.append(message)
        return message

    def boot(self, did: str, at: str, sync: bool = True) -> None:
        d = self.devices[did]
        d["boot"] += 1
        d["boot_at"] = when(at)
        d["sync_at"] = None
        self._emit(did, "boot", when(at), synced=False)
        if sync:
            d["sync_at"] = when(at)
            self._emit(did, "clock_sync", when(at), x={"offset_ms": 0})

    def sync(self, did: str, at: str) -> None:
        """A clock_sync at `at`: the device's time is right from here on."""
        self.devices[did]["sync_at"] = when(at)
        self._emit(did, "clock_sync", when(at), x={"offset_ms": 0})

    def event(self, did: str, event_type: str, at: str, staff: str | None = None,
              x: dict[str, Any] | None = None) -> bytes:  # fmt: skip
        cred = credential_id(staff) if staff else None
        return self._emit(did, event_type, when(at), cred, x)

    def visit(self, did: str, staff: str, start: str, end: str | None, via: str = "badge") -> None:
        self.event(did, "arrive", start, staff, {"via": via})
        if end is not None:
            self.event(did, "depart", end, staff, {"via": via})

    def lock_visit(self, did: str, staff: str, start: str, end: str) -> None:
        self.event(did, "unlock", start, staff, {"via": "phone"})
        self.event(did, "lock", end, staff, {"via": "phone"})

    def alarm(self, did: str, call: str, checkin: str, checkout: str) -> None:
        d = self.devices[did]
        d["calls"] += 1
        number = d["calls"]
        self.event(did, "alarm_call", call, None, {"alarm": number})
        self.event(did, "alarm_checkin", checkin, None, {"alarm": number})
        self.event(did, "alarm_checkout", checkout, None, {"alarm": number})

    # writing ------------------------------------------------------------------------------
    def registry_toml(self) -> str:
        out = []
        for c in self.customers:
            out.append("[[customer]]")
            out += [f'{k} = "{v}"' for k, v in c.items() if v]
            out.append("")
        for did, d in self.devices.items():
            public = d["key"].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
            out += ["[[device]]", f'id = "{did}"', f'customer = "{d["customer"]}"',
                    f'role = "{d["role"]}"', f'public_key = "{public}"',
                    'installed = "2026-09-01"', f'revoked = "{d["revoked"]}"', ""]  # fmt: skip
        for c in self.credentials:
            out.append("[[credential]]")
            out += [f'{k} = "{v}"' for k, v in c.items()]
            out.append("")
        return "\n".join(out)

    def write(self, jsonl: bool = False) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "registry.toml").write_text(self.registry_toml())
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["customer", "activity", "granted_minutes_month", "valid_from",
                         "valid_to", "double_staffing", "tag_exempt"])  # fmt: skip
        writer.writerows(self.orders)
        (self.root / "orders.csv").write_text(buffer.getvalue())
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CLAIM_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.claims)
        (self.root / "claims.csv").write_text(buffer.getvalue())
        if jsonl:
            lines = "".join(base64.b64encode(m).decode() + "\n" for m in self.messages)
            (self.root / "evidence.jsonl").write_text(lines)
        else:
            (self.root / "evidence.cbor-seq").write_bytes(b"".join(self.messages))
        return self.root


def standard(
    root: Path,
    staff: tuple[str, ...] = ("s-07",),
    profile_activity: str = "226",
    start_boot_at: str = "2026-09-30T06:00",
) -> Bundle:
    """One customer c-1001 with tag-0042, registered staff, an order for the activity."""
    b = Bundle(root, start_boot_at=start_boot_at)
    b.customer("c-1001")
    b.device("tag-0042", "c-1001")
    for s in staff:
        b.credential(s)
    b.order("c-1001", profile_activity)
    return b


def utc(text: str) -> datetime:
    return when(text).astimezone(timezone.utc)


def run(bundle: Bundle, profile: str, month: str = "2026-10"):  # noqa: ANN201 (Result)
    """Write the bundle and verify it; returns kvitto.verify.check.Result."""
    from kvitto.verify.check import verify_case

    return verify_case(bundle.write(), profile, month)


def rules_of(result: Any, claim_id: str) -> dict[str, str]:
    """{rule: outcome} of one claim's findings."""
    return {f.rule: f.outcome for f in result.findings_for(claim_id)}


def payable_of(result: Any, claim_id: str, rule: str) -> int:
    return next(f.payable_minutes for f in result.findings_for(claim_id) if f.rule == rule)


def household(root: Path, staff: tuple[str, ...] = ("s-07",), activity: str = "226") -> Bundle:
    """Cohabitants c-1001 (tag-0042) and c-1002 (tag-0043) in household h-17."""
    b = Bundle(root)
    b.customer("c-1001", household="h-17")
    b.customer("c-1002", household="h-17")
    b.device("tag-0042", "c-1001")
    b.device("tag-0043", "c-1002")
    for s in staff:
        b.credential(s)
    b.order("c-1001", activity)
    b.order("c-1002", activity)
    return b


def bench_verify():
    """bench/verify.py as a module (its signed_bundle builds the audit tests' bundles), loaded
    once per test process."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "kvitto_bench_verify", Path(__file__).resolve().parent.parent / "bench" / "verify.py"
    )
    assert spec is not None and spec.loader is not None
    bench = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = bench
        spec.loader.exec_module(bench)
    return bench

"""Writes the wire-format vectors (FORMATS.md §1–2) that device and host must agree on.

    .venv/bin/python tests/vectors/make_vectors.py            # rewrites tests/vectors/
    .venv/bin/python tests/vectors/make_vectors.py /tmp/out   # elsewhere, to compare

Deterministic: fixed keys (SHA-256 of a label), fixed fields, Ed25519 is deterministic. Made with
cbor2 (canonical=True) and cryptography only, independent of both kvitto encoders. The files it
wrote are the contract: tests read the checked-in files, and check this script still makes them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
KEY_LABELS = ("tag-0042", "lock-0007", "org", "intruder")
T0 = 1_790_829_000  # 2026-10-01T02:30:00Z
NOW = 1_790_900_000  # the device clock when commands are checked
CRED = bytes.fromhex("198f61fa6e666ca15e852132fe1190e3")
CRED_2 = bytes.fromhex("5a1d0c9e3b7f4a2286e1d3c4b5a69788")


def secret(label: str) -> bytes:
    return hashlib.sha256(b"kvitto vector key " + label.encode()).digest()


def public(label: str) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret(label)).public_key().public_bytes_raw()


def enc(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def sign1(label: str, kid: bytes, payload: bytes, protected: bytes | None = None) -> bytes:
    protected = protected if protected is not None else enc({1: -8, 4: kid})
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    signature = Ed25519PrivateKey.from_private_bytes(secret(label)).sign(to_sign)
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))


def fields_map(f: dict[str, Any]) -> dict[int, Any]:
    keys = {"dev": 1, "seq": 2, "boot": 3, "up": 4, "t": 5, "sync": 6, "type": 7, "cred": 8}
    out: dict[int, Any] = {0: 1}
    out.update({keys[name]: value for name, value in f.items() if name in keys})
    out[9] = f["prev"]
    if f.get("x"):
        out[10] = f["x"]
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# One boot of tag-0042: every event type, in sequence, chained. (type, up, clock?, cred, x)
STREAM = [
    ("boot", 1_200, False, None, {"reset": "power", "fw": "0.1.0"}),
    ("clock_sync", 3_400, True, None, {"offset_ms": -1250}),
    ("health", 60_000, True, None, {"fill": 3, "rssi": -61}),
    ("arrive", 5_580_000, True, CRED, {"via": "badge"}),
    ("door_open", 5_585_000, True, None, None),
    ("door_close", 5_590_000, True, None, None),
    ("unlock", 5_600_000, True, CRED_2, {"via": "ntag424"}),
    ("lock", 5_610_000, True, None, None),
    ("deny", 5_620_000, True, bytes(16), {"via": "badge"}),
    ("depart", 7_320_000, True, CRED, {"via": "ntag424", "sun": bytes(range(24))}),
    ("alarm_call", 8_000_000, True, None, {"alarm": 1}),
    ("alarm_checkin", 8_400_000, True, None, {"alarm": 1}),
    ("alarm_checkout", 9_000_000, True, None, {"alarm": 1}),
    ("tag_read", 9_100_000, True, None, {"ctr": 17}),
    ("tamper", 9_200_000, True, None, None),
]


def build() -> tuple[dict[str, Any], dict[str, bytes]]:
    files: dict[str, bytes] = {}
    vectors: list[dict[str, Any]] = []

    def add(name: str, message: bytes, **info: Any) -> None:
        files[f"{name}.cbor"] = message
        vectors.append({"name": name, "file": f"{name}.cbor", **info})

    prev = bytes(32)
    stream_files: list[str] = []
    payloads: list[bytes] = []
    for index, (kind, up, clock, cred, x) in enumerate(STREAM, start=1):
        f: dict[str, Any] = {"dev": "tag-0042", "seq": index, "boot": 3, "up": up, "type": kind}
        if clock:
            f["t"], f["sync"] = T0 + up // 1000, up // 1000 - 3
        if cred is not None:
            f["cred"] = cred
        f["prev"] = prev
        if x:
            f["x"] = x
        payload = enc(fields_map(f))
        name = f"event-{index:02d}-{kind.replace('_', '-')}"
        add(name, sign1("tag-0042", b"tag-0042", payload), kind="event", key="tag-0042",
            fields=jsonable(f), expect="valid")  # fmt: skip
        stream_files.append(f"{name}.cbor")
        payloads.append(payload)
        prev = hashlib.sha256(payload).digest()

    # Another device, one event: keys and kids are per device.
    lock = {"dev": "lock-0007", "seq": 1, "boot": 1, "up": 90, "type": "unlock",
            "prev": bytes(32), "x": {"via": "exit"}}  # fmt: skip
    add("event-lock-0007-unlock", sign1("lock-0007", b"lock-0007", enc(fields_map(lock))),
        kind="event", key="lock-0007", fields=jsonable(lock), expect="valid")  # fmt: skip

    valid = files["event-04-arrive.cbor"]
    protected, _, payload, signature = cbor2.loads(valid).value
    arrive = fields_map(json_fields(vectors[3]["fields"]))

    def event_invalid(name: str, message: bytes, expect: str, why: str, key: str = "tag-0042"):
        add(name, message, kind="event", key=key, expect=expect, why=why)

    flipped = bytearray(valid)
    flipped[-1] ^= 0x01
    event_invalid("bad-signature", bytes(flipped), "BadSignature", "last signature bit flipped")
    event_invalid("wrong-key", sign1("intruder", b"tag-0042", payload), "BadSignature",
                  "signed by another key that claims tag-0042")  # fmt: skip
    event_invalid("wrong-kid", sign1("tag-0042", b"tag-0043", payload), "KidMismatch",
                  "validly signed, but the kid names another device than dev")  # fmt: skip
    event_invalid("unknown-alg", sign1("tag-0042", b"", payload, enc({1: -7, 4: b"tag-0042"})),
                  "UnknownAlgorithm", "alg -7 (ES256) instead of -8")  # fmt: skip
    event_invalid("truncated", valid[:-20], "Truncated", "the last 20 bytes are cut off")
    event_invalid("trailing-bytes", valid + b"\x00", "NotCBOR", "a byte after the message")
    big = {**arrive, 7: "health", 10: {f"k{i:03d}": "v" * 60 for i in range(16)}}
    del big[8]
    event_invalid("oversized", sign1("tag-0042", b"tag-0042", enc(big)), "Oversized",
                  "more than 1024 bytes")  # fmt: skip
    # Non-canonical: seq 4 as a two-byte integer (0x19 0x0004), validly signed.
    long_seq = payload.replace(b"\x02\x04", b"\x02\x19\x00\x04", 1)
    event_invalid("non-canonical-int", sign1("tag-0042", b"tag-0042", long_seq), "NonCanonical",
                  "seq in a longer form than needed, signed")  # fmt: skip
    # Non-canonical: key 1 before key 0 (the map is otherwise identical), validly signed.
    swapped = b"\xab" + payload[3 : 3 + 10] + payload[1:3] + payload[13:]
    assert cbor2.loads(swapped) == cbor2.loads(payload)
    event_invalid("non-canonical-order", sign1("tag-0042", b"tag-0042", swapped), "NonCanonical",
                  "map keys 1 and 0 swapped, signed")  # fmt: skip
    event_invalid("untagged", cbor2.dumps([protected, {}, payload, signature]), "NotCoseSign1",
                  "the COSE_Sign1 array without tag 18")  # fmt: skip
    event_invalid("unprotected-header",
                  cbor2.dumps(cbor2.CBORTag(18, [protected, {4: b"x"}, payload, signature])),
                  "BadHeader", "a kid in the (unsigned) unprotected header")  # fmt: skip

    def signed_fields(name: str, changes: dict[int, Any], expect: str, why: str):
        body = {**arrive, **changes}
        for key, value in changes.items():
            if value is None:
                del body[key]
        event_invalid(name, sign1("tag-0042", b"tag-0042", enc(body)), expect, why)

    signed_fields("unknown-type", {7: "party"}, "UnknownEventType", "type is not in FORMATS.md")
    signed_fields("unknown-field", {11: 1}, "UnknownField", "payload key 11")
    signed_fields("missing-seq", {2: None}, "MissingField", "no key 2")
    signed_fields("short-cred", {8: CRED[:15]}, "FieldType", "cred of 15 bytes")
    signed_fields("t-without-sync", {6: None}, "MissingField", "t present, sync absent")
    signed_fields("empty-x", {10: {}}, "FieldType", "x present but empty")
    signed_fields("version-2", {0: 2}, "UnsupportedVersion", "format version 2")
    signed_fields("bad-dev", {1: "Tag_0042"}, "FieldType", "dev outside [a-z0-9-]")

    # Streams: sequence and chain over one device.
    vectors.append({"name": "stream-valid", "kind": "stream", "key": "tag-0042",
                    "files": stream_files, "expect": "valid"})  # fmt: skip
    vectors.append({"name": "stream-gap", "kind": "stream", "key": "tag-0042",
                    "files": stream_files[:5] + stream_files[6:], "expect": "SequenceGap"})  # fmt: skip
    vectors.append({"name": "stream-repeat", "kind": "stream", "key": "tag-0042",
                    "files": stream_files[:5] + stream_files[4:], "expect": "SequenceRepeat"})  # fmt: skip
    forged = fields_map(json_fields(vectors[5]["fields"]))  # seq 6 with a prev that is not 5's
    forged[9] = hashlib.sha256(payloads[3]).digest()
    add("chain-broken-06", sign1("tag-0042", b"tag-0042", enc(forged)), kind="event",
        key="tag-0042", expect="valid", why="valid alone; breaks the chain after event 5")  # fmt: skip
    vectors.append({"name": "stream-broken-chain", "kind": "stream", "key": "tag-0042",
                    "files": stream_files[:5] + ["chain-broken-06.cbor"], "expect": "BrokenChain"})  # fmt: skip

    # Commands (FORMATS.md §2); `device` is what parse_command does with last_seq 4 at NOW.
    def command(name: str, fields: dict[int, Any], host: str, device: str, label: str = "org",
                kid: bytes = b"org") -> None:  # fmt: skip
        add(name, sign1(label, kid, enc(fields)), kind="command", key="org", target="tag-0042",
            last_seq=4, now=NOW, expect=host, device=device, fields=jsonable(fields))  # fmt: skip

    def cmd(
        seq: int, kind: str, x: dict | None, target: str = "tag-0042", expires: int = NOW + 300
    ):
        fields = {0: 1, 1: target, 2: seq, 3: expires, 7: kind}
        if x:
            fields[10] = x
        return fields

    command("command-ack", cmd(5, "ack", {"upto": 15}), "valid", "obey")
    command("command-resend", cmd(6, "resend", {"from": 3, "to": 9}), "valid", "obey")
    command("command-allow", cmd(7, "allow", {"creds": [CRED, CRED_2]}), "valid", "obey")
    command("command-revoke", cmd(8, "revoke", {"creds": [CRED_2]}), "valid", "obey")
    command("command-time", cmd(9, "time", {"t": NOW}), "valid", "obey")
    command("command-config", cmd(10, "config", {"debounce_ms": 800}), "valid", "obey")
    command("command-other-target", cmd(11, "ack", {"upto": 1}, target="tag-0043"),
            "WrongTarget", "refuse:target")  # fmt: skip
    command("command-expired", cmd(12, "ack", {"upto": 1}, expires=NOW - 1), "Expired",
            "refuse:expired")  # fmt: skip
    command("command-old-seq", cmd(4, "ack", {"upto": 1}), "valid", "refuse:sequence")
    command("command-device-key", cmd(13, "ack", {"upto": 1}), "BadSignature",
            "refuse:signature", label="tag-0042")  # fmt: skip
    command("command-kid-not-org", cmd(14, "ack", {"upto": 1}), "KidMismatch",
            "refuse:signature", kid=b"tag-0042")  # fmt: skip
    command("command-short-cred", cmd(15, "allow", {"creds": [CRED[:15]]}), "FieldType",
            "refuse:malformed")  # fmt: skip
    command("command-unknown-type", cmd(16, "reboot", None), "UnknownCommandType",
            "refuse:malformed")  # fmt: skip
    # issue #22: an update offered; x.manifest is a release manifest (docs/formats-v1-additions.md)
    manifest = sign1("org", b"release", enc({0: 1, 1: "0.2.0", 2: 1500000,
                                             3: hashlib.sha256(b"image").digest(), 4: "esp32"}))  # fmt: skip
    command("command-ota", cmd(17, "ota", {"manifest": manifest}), "valid", "obey")
    command("command-ota-oversized", cmd(18, "ota", {"manifest": bytes(513)}), "FieldType",
            "refuse:malformed")  # fmt: skip

    # issue #23: a lock's visit windows and a one-off grant (docs/formats.md §2.3)
    command("command-schedule", cmd(19, "schedule", {"issued": NOW * 1000, "until": NOW + 86400,
                                                     "tol": 900, "w": [[NOW + 600, NOW + 2400]]}),
            "valid", "obey")  # fmt: skip
    command("command-window", cmd(20, "window", {"start": NOW, "end": NOW + 3600}), "valid",
            "obey")  # fmt: skip

    index = {
        "format": "kvitto wire format v1 vectors (FORMATS.md §1-2)",
        "generator": "tests/vectors/make_vectors.py",
        "keys": {
            label: {"secret": secret(label).hex(), "public": public(label).hex()}
            for label in KEY_LABELS
        },  # fmt: skip
        "now": NOW,
        "vectors": vectors,
    }
    return index, files


def json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes.fromhex(v["hex"]) if isinstance(v, dict) and "hex" in v else v
            for k, v in fields.items()}  # fmt: skip


def write(out: Path) -> None:
    index, files = build()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)

"""device/evidence/cose.py and device/evidence/event.py: events byte-identical to what the host makes with cbor2 and
cryptography, verified by kvitto.evidence.events; commands from the host obeyed or refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from signing_support import device_module, fakes_module

from kvitto.evidence.commands import sign_command
from kvitto.evidence.cose import canonical, read_messages, sign1
from kvitto.evidence.events import verify_event

cose = device_module("evidence.cose")
event = device_module("evidence.event")
ed25519 = device_module("evidence.ed25519")
device_signing = fakes_module("device_signing")

DEVICE_SECRET = hashlib.sha256(b"kvitto test device tag-0042").digest()
ORG_SECRET = hashlib.sha256(b"kvitto test org").digest()
EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "examples" / "case-minimal"


def public(secret: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def host_event(secret: bytes, fields: dict) -> bytes:
    """The same event made independently: cbor2 canonical encoding and cryptography's Ed25519."""
    payload = cbor2.dumps(fields, canonical=True)
    protected = cbor2.dumps({1: -8, 4: fields[1].encode()}, canonical=True)
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    signature = Ed25519PrivateKey.from_private_bytes(secret).sign(to_sign)
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))


def payload_fields(dev, seq, boot, up, type, prev, t=None, sync=None, cred=None, x=None) -> dict:
    fields = {0: 1, 1: dev, 2: seq, 3: boot, 4: up, 7: type, 9: prev}
    if t is not None:
        fields[5], fields[6] = t, sync
    if cred is not None:
        fields[8] = cred
    if x:
        fields[10] = x
    return fields


X_BY_TYPE = {
    "arrive": st.fixed_dictionaries({"via": st.sampled_from(["badge", "ntag424", "phone"])}),
    "depart": st.fixed_dictionaries(
        {"via": st.just("badge")}, optional={"sun": st.binary(min_size=32, max_size=32)}
    ),
    "unlock": st.fixed_dictionaries({"via": st.just("lock")}),
    "door_open": st.none(),
    "alarm_call": st.fixed_dictionaries({"alarm": st.integers(0, 99)}),
    "alarm_checkin": st.one_of(st.none(), st.fixed_dictionaries({"alarm": st.integers(0, 99)})),
    "tag_read": st.fixed_dictionaries({"ctr": st.integers(0, 2**32)}),
    "clock_sync": st.fixed_dictionaries({"offset_ms": st.integers(-(2**31), 2**31)}),
    "health": st.dictionaries(st.text(max_size=8), st.integers(-1000, 10**6), max_size=4),
    "boot": st.none(),
}


@st.composite
def events(draw):
    type = draw(st.sampled_from(sorted(X_BY_TYPE)))
    clock = draw(st.booleans())
    return dict(
        dev=draw(st.from_regex(r"\A[a-z0-9-]{3,32}\Z")),
        seq=draw(st.integers(1, 2**40)),
        boot=draw(st.integers(0, 2**20)),
        up=draw(st.integers(0, 2**40)),
        type=type,
        prev=draw(st.binary(min_size=32, max_size=32)),
        t=draw(st.integers(1_600_000_000, 2**32)) if clock else None,
        sync=draw(st.integers(0, 10**6)) if clock else None,
        cred=draw(st.binary(min_size=16, max_size=16)) if type in ("arrive", "depart") else None,
        x=draw(X_BY_TYPE[type]),
    )


@settings(max_examples=150)
@given(events())
def test_device_event_is_byte_identical_to_the_host_encoding(fields):
    payload = event.build_payload(**fields)
    assert payload == cbor2.dumps(payload_fields(**fields), canonical=True)
    message = device_signing.sign1(payload, fields["dev"], DEVICE_SECRET)
    assert message == host_event(DEVICE_SECRET, payload_fields(**fields))
    verified = verify_event(message, public(DEVICE_SECRET))
    assert (verified.dev, verified.seq, verified.type) == (
        fields["dev"],
        fields["seq"],
        fields["type"],
    )
    assert cose.verify1(message, public(DEVICE_SECRET)) == (fields["dev"].encode(), payload)


def example_events() -> list[dict]:
    if not EXAMPLE.exists():
        pytest.skip(f"shared examples not beside the checkout ({EXAMPLE})")
    out = []
    for _, message in read_messages(EXAMPLE / "evidence.cbor-seq"):
        payload = cbor2.loads(cbor2.loads(message).value[2])
        names = {1: "dev", 2: "seq", 3: "boot", 4: "up", 5: "t", 6: "sync", 7: "type", 8: "cred"}
        fields = {name: payload[key] for key, name in names.items() if key in payload}
        fields["prev"] = payload[9]
        if 10 in payload:
            fields["x"] = dict(payload[10])
        out.append({"fields": fields, "payload": cbor2.loads(message).value[2]})
    return out


def test_device_reproduces_the_independent_example_payloads():
    for item in example_events():
        assert event.build_payload(**item["fields"]) == item["payload"]


def test_unix_port_reproduces_the_example_payloads_and_chain(micropython, tmp_path):
    items = example_events()
    rows = [
        {**{k: (v.hex() if isinstance(v, bytes) else v) for k, v in i["fields"].items()}}
        for i in items
    ]
    (tmp_path / "events.json").write_text(json.dumps(rows))
    out = micropython(
        """
        import hashlib, json
        from device.evidence import event
        prev = bytes(32)
        for row in json.load(open("events.json")):
            row["prev"] = bytes.fromhex(row["prev"])
            if "cred" in row:
                row["cred"] = bytes.fromhex(row["cred"])
            print(row["prev"] == prev, event.build_payload(**row).hex())
            prev = hashlib.sha256(event.build_payload(**row)).digest()
        """,
        cwd=tmp_path,
    )
    lines = [line.split() for line in out.strip().splitlines()]
    assert [line[1] for line in lines] == [i["payload"].hex() for i in items]
    assert all(line[0] == "True" for line in lines)


def test_unix_port_signs_events_the_host_verifies(micropython):
    cases = [
        dict(dev="tag-0042", seq=1, boot=1, up=60000, type="boot", prev=bytes(32)),
        dict(dev="tag-0042", seq=2, boot=1, up=61000, type="clock_sync", prev=bytes(range(32)),
             t=1790829060, sync=0, x={"offset_ms": -120}),
        dict(dev="lock-0007", seq=77, boot=3, up=5, type="arrive", prev=b"\x07" * 32,
             t=1790834520, sync=5460, cred=b"\x19" * 16, x={"via": "ntag424", "sun": b"\x01" * 48}),
    ]  # fmt: skip
    script = f"from device.evidence import event\nfrom device_signing import sign1\nsecret = {DEVICE_SECRET!r}\n"
    for case in cases:
        script += "print(sign1(event.build_payload(**{!r}), {!r}, secret).hex())\n".format(
            case,
            case["dev"],
        )
    out = micropython(script).split()
    for case, made in zip(cases, out, strict=True):
        message = bytes.fromhex(made)
        assert message == host_event(DEVICE_SECRET, payload_fields(**case))
        assert verify_event(message, public(DEVICE_SECRET)).seq == case["seq"]


def test_build_payload_refuses_what_formats_forbids():
    good = dict(dev="tag-0042", seq=1, boot=1, up=0, type="boot", prev=bytes(32))
    for change in (
        {"dev": "Tag-0042"}, {"dev": "ab"}, {"dev": "a" * 33}, {"seq": 0}, {"seq": -1},
        {"boot": True}, {"up": 2**64}, {"type": "party"}, {"prev": bytes(31)},
        {"t": 1790829000}, {"sync": 5}, {"cred": bytes(15)}, {"x": {"f": 1.5}}, {"x": [1]},
        {"x": {1: "int key"}}, {"x": {"n": "n" * 65}}, {"x": {f"k{i}": i for i in range(17)}},
        {"x": {"a": {"b": {"c": 1}}}}, {"x": {f"k{i:02d}": "v" * 64 for i in range(16)}},
    ):  # fmt: skip
        with pytest.raises(event.EventError):
            event.build_payload(**{**good, **change})
    # x absent when empty; t/sync absent when the clock was never set.
    assert cbor2.loads(event.build_payload(**good, x={})) == payload_fields(**good)


def test_credential_id_is_hmac_sha256_truncated():
    for salt in (b"", b"org-salt", bytes(64), bytes(100)):
        raw = b"\x04\x11\x22\x33\x44\x55\x66"
        assert event.credential_id(salt, raw) == hmac.digest(salt, raw, "sha256")[:16]


def test_assemble_from_a_cached_signature_equals_the_host_message():
    payload = event.build_payload("tag-0042", 9, 2, 1234, "door_open", bytes(32))
    signature = device_signing.signature(payload, b"tag-0042", DEVICE_SECRET)
    assert cose.assemble(payload, b"tag-0042", signature) == host_event(
        DEVICE_SECRET, payload_fields("tag-0042", 9, 2, 1234, "door_open", bytes(32))
    )


def test_verify1_refusals():
    payload = event.build_payload("tag-0042", 9, 2, 1234, "door_open", bytes(32))
    message = device_signing.sign1(payload, "tag-0042", DEVICE_SECRET)
    with pytest.raises(cose.COSEError, match="signature"):
        cose.verify1(message, public(ORG_SECRET))
    protected, _, body, signature = cbor2.loads(message).value
    for broken in (
        cbor2.dumps(cbor2.CBORTag(98, [protected, {}, body, signature])),
        cbor2.dumps([protected, {}, body, signature]),
        cbor2.dumps(cbor2.CBORTag(18, [protected, {1: -8}, body, signature])),
        cbor2.dumps(
            cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: b"tag-0042"}), {}, body, signature])
        ),
        cbor2.dumps(cbor2.CBORTag(18, [protected, {}, body, signature[:63]])),
        message[:-1],
        message + b"\x00",
        b"\xd2" + bytes(5000),
    ):
        with pytest.raises(cose.COSEError):
            cose.verify1(broken, public(DEVICE_SECRET))


def raw_command(x: dict, command_type: str = "allow") -> bytes:
    """A command the host API would refuse to make: signed, but with malformed x."""
    fields = {0: 1, 1: "tag-0042", 2: 5, 3: 2_000_000_000, 7: command_type, 10: x}
    return sign1(ORG_SECRET, b"org", canonical(fields))


def command(**overrides) -> bytes:
    args = dict(
        org_secret=ORG_SECRET, target="tag-0042", command_seq=5, expires=2_000_000_000,
        command_type="ack", x={"upto": 12},
    )  # fmt: skip
    args.update(overrides)
    return sign_command(**args)


def test_parse_command_obeys_the_host_and_refuses_the_rest():
    org = public(ORG_SECRET)
    now = 1_900_000_000
    assert event.parse_command(command(), org, "tag-0042", 4, now) == (5, "ack", {"upto": 12})
    assert event.parse_command(command(), org, "tag-0042", 4, None)[0] == 5
    refusals = {
        "signature": command(org_secret=DEVICE_SECRET),
        "target": command(target="tag-0043"),
        "sequence": command(command_seq=4),
        "expired": command(expires=now - 1),
        "malformed": raw_command({"from": 9, "to": 3}, "resend"),
    }
    for reason, message in refusals.items():
        with pytest.raises(event.CommandRefused) as refused:
            event.parse_command(message, org, "tag-0042", 4, now)
        assert refused.value.reason == reason
    # An event signed by a device, even with a valid signature, is not a command (kid != org).
    device_message = device_signing.sign1(event.build_payload("tag-0042", 9, 2, 1, "boot", bytes(32)),
                                "tag-0042", ORG_SECRET)  # fmt: skip
    with pytest.raises(event.CommandRefused):
        event.parse_command(device_message, org, "tag-0042", 0, now)


def test_unix_port_verifies_host_commands(micropython):
    org = public(ORG_SECRET)
    now = 1_900_000_000
    cases = [
        command(),
        command(command_type="allow", x={"creds": [b"\x01" * 16, b"\x02" * 16]}, command_seq=6),
        command(command_type="time", x={"t": now}, command_seq=7),
        command(org_secret=DEVICE_SECRET),
        command(target="tag-0043"),
        command(command_seq=4),
        command(expires=now - 1),
        raw_command({"creds": [b"\x01" * 15]}),
    ]
    out = micropython(
        f"""
        from device.evidence import event
        for message in {cases!r}:
            try:
                seq, type, x = event.parse_command(message, {org!r}, "tag-0042", 4, {now:d})
                print("obey", seq, type)
            except event.CommandRefused as refused:
                print("refuse", refused.reason)
        """
    )
    assert out.strip().splitlines() == [
        "obey 5 ack", "obey 6 allow", "obey 7 time", "refuse signature", "refuse target",
        "refuse sequence", "refuse expired", "refuse malformed",
    ]  # fmt: skip


@pytest.mark.parametrize("kid", [b"org", b"alarm-unit-with-a-long-name-0001"])
@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_sign1_writes_the_canonical_envelope(kid, size):
    """sign1 writes the COSE_Sign1 envelope byte by byte: the same bytes as canonical() of the
    tagged array, for every head size of the header, the payload and the signature."""
    secret = bytes(range(32))
    payload = bytes(size)
    message = sign1(secret, kid, payload)
    protected = canonical({1: -8, 4: kid})
    signature = cbor2.loads(message).value[3]
    Ed25519PrivateKey.from_private_bytes(secret).public_key().verify(
        signature, cbor2.dumps(["Signature1", protected, b"", payload])
    )
    assert message == canonical(cbor2.CBORTag(18, [protected, {}, payload, signature]))

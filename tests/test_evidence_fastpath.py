"""The fast paths decide exactly as the strict ones: the C-speed canonical check agrees with the
pure-Python one where it is trusted, and defers to it where length-first (RFC 7049) and bytewise
(RFC 8949 §4.2.1) key orders differ; EventVerifier (the bundle re-check) returns an Event only
where verify_event returns the same Event, over mutated payloads and envelope byte forms that
carry valid signatures, and build_evidence's result does not depend on it."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from signing_support import VECTORS

from kvitto.evidence import events as events_module
from kvitto.evidence.cose import (
    ALG_EDDSA,
    EVENT_TYPES,
    UINT_MAX,
    BadPayload,
    EvidenceError,
    NonCanonical,
    _decode,
    _head,
    canonical,
    read_messages,
    sig_structure,
    sign1,
    split_sign1,
)
from kvitto.evidence.events import Event, EventVerifier, verify_event
from kvitto.verify.case import Customer, Device, Registry
from kvitto.verify.visits import build_evidence


def public_key(secret: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def test_mixed_key_types_use_bytewise_order():
    value = {1000: 1, "a": 2}  # 0x19 03e8 sorts before 0x61 61 bytewise; after it length-first
    bytewise = canonical(value)
    length_first = cbor2.dumps(value, canonical=True)
    assert bytewise != length_first
    assert _decode(bytewise, "map") == value
    with pytest.raises(NonCanonical):
        _decode(length_first, "map")


@pytest.mark.parametrize(
    "value",
    [
        {0: 1, 1: "tag-0042", 10: {"via": "badge", "sun": b"\x01" * 8}},
        {"nonce": b"\x00" * 16, "sig": b"\x01" * 64},
        [1, -1, 2**64 - 1, -(2**64), b"", ""],
    ],
)
def test_fast_and_slow_agree_on_plain_values(value):
    data = canonical(value)
    assert data == cbor2.dumps(value, canonical=True)
    assert _decode(data, "value") == value


def test_bignum_and_floats_are_refused_even_when_cbor2_would_round_trip_them():
    for value in (2**64, 1.5):
        with pytest.raises(NonCanonical):
            _decode(cbor2.dumps(value, canonical=True), "value")


# -- EventVerifier: the fused bundle path decides exactly as verify_event -----------------------

SECRETS = {
    device: hashlib.sha256(device.encode()).digest()
    for device in ("tag-0042", "lock-7", "alarm-unit-with-a-long-name-0001")  # kid ≥ 24 bytes
}
PUBLIC = {device: public_key(secret) for device, secret in SECRETS.items()}
STRANGER = hashlib.sha256(b"not registered").digest()
VIA = {"via": "badge"}
BASE: dict[str, dict[Any, Any]] = {
    "arrive": {8: bytes(range(16)), 10: VIA},
    "depart": {8: bytes(16), 10: {"via": "ntag424", "sun": bytes(range(24))}},
    "unlock": {8: bytes(16), 10: {"via": "keypad"}},
    "lock": {},
    "deny": {8: bytes(16)},
    "door_open": {},
    "door_close": {},
    "alarm_call": {10: {"alarm": 3}},
    "alarm_checkin": {8: bytes(16), 10: {"alarm": 3}},
    "alarm_checkout": {8: bytes(16)},
    "tag_read": {10: {"ctr": 2**40}},
    "boot": {},
    "clock_sync": {10: {"offset_ms": -1200, "src": "ntp"}},
    "tamper": {10: {"what": "lid"}},
    "health": {10: {"rssi": -60, "heap": {"free": 81234}}},
}
PHONE = {"via": "phone", "nonce": bytes(16), "sig": bytes(64)}
ODD_VALUES = [
    0, 1, 23, 24, 255, 256, 2**32, UINT_MAX, UINT_MAX + 1, -1, -(2**63), -(2**63) - 1, -(2**64),
    True, False, None, 1.0, 0.5, Decimal(1), Fraction(1, 1), "", "a", "tag-0042", "x" * 33,
    "arrive", "phone", "badge", b"", b"\x01", bytes(15), bytes(16), bytes(32), bytes(33), [], [1],
    {}, VIA, PHONE, {"via": "badge", "sun": b""}, {"alarm": True}, {"offset_ms": 2**63},
    cbor2.CBORTag(2, b"\x05"), cbor2.CBORTag(1, 5), cbor2.CBORSimpleValue(99),
]  # fmt: skip
# Keys that hash and compare equal to the integer keys, yet are other CBOR items.
ODD_KEYS = [False, True, 0.0, 1.0, 7.0, Decimal(2), Fraction(9, 1), 11, 24, -1, "v", b"\x00"]


def valid_fields(device: str, event_type: str, seq: int = 5) -> dict[Any, Any]:
    fields = {0: 1, 1: device, 2: seq, 3: 2, 4: 90_000, 5: 1_790_000_000, 6: 30, 7: event_type,
              9: bytes(range(32))}  # fmt: skip
    fields.update(BASE[event_type])
    return fields


def strict_verdict(message: bytes) -> Event | str:
    """verify_event under the key the kid names: the Event, or the name of the failure."""
    try:
        kid = split_sign1(message)[0][4]
        public = PUBLIC.get(kid.decode("utf-8", "replace"))
        if public is None:
            return "unregistered"
        return verify_event(message, public)
    except EvidenceError as error:
        return type(error).__name__


def fast_verdict(message: bytes, verifier: EventVerifier | None = None) -> Event | None:
    return (verifier or EventVerifier(PUBLIC.get)).event(message)


def assert_agree(message: bytes, verifier: EventVerifier | None = None) -> Event | None:
    """The fast path returns verify_event's Event, or None where verify_event refuses."""
    strict = strict_verdict(message)
    fast = fast_verdict(message, verifier)
    if isinstance(strict, Event):
        assert fast == strict
    else:
        assert fast is None, f"fast path accepted what verify_event refuses as {strict}"
    return fast


def encode(value: Any, how: str) -> bytes:
    """`how`: canonical (RFC 8949 §4.2.1), length-first (cbor2 canonical, RFC 7049) or plain
    (cbor2 in the dict's own order). Values canonical() refuses are written plainly."""
    try:
        if how == "canonical":
            return canonical(value)
        return cbor2.dumps(value, canonical=how == "length-first")
    except (NonCanonical, cbor2.CBOREncodeError, TypeError):
        return cbor2.dumps(value)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    device = draw(st.sampled_from(sorted(SECRETS)))
    fields = valid_fields(device, draw(st.sampled_from(sorted(BASE))))
    if draw(st.booleans()):
        del fields[5], fields[6]
    for _ in range(draw(st.integers(0, 3))):
        operation = draw(st.sampled_from(["value", "add", "drop", "key", "x", "order"]))
        keys = sorted(fields, key=repr)
        if operation == "value":
            fields[draw(st.sampled_from(keys))] = draw(st.sampled_from(ODD_VALUES))
        elif operation == "add":
            fields[draw(st.integers(0, 11))] = draw(st.sampled_from(ODD_VALUES))
        elif operation == "drop":
            del fields[draw(st.sampled_from(keys))]
        elif operation == "key":  # replace a key by an odd one: the value moves with it
            key = draw(st.sampled_from(keys))
            value = fields.pop(key)
            fields[draw(st.sampled_from(ODD_KEYS))] = value
        elif operation == "x" and isinstance(fields.get(10), dict):
            x = dict(fields[10])
            name = draw(st.sampled_from([*x, "via", "sun", "nonce", "sig", "alarm", "src", "z"]))
            if draw(st.booleans()):
                x.pop(name, None)
            else:
                x[name] = draw(st.sampled_from(ODD_VALUES))
            fields[10] = x
        elif operation == "order":
            fields = dict(draw(st.permutations(list(fields.items()))))
    payload = encode(fields, draw(st.sampled_from(["canonical", "length-first", "plain"])))
    if draw(st.integers(0, 4)) == 0:  # and now and then a raw byte edit of the encoding
        at = draw(st.integers(0, len(payload) - 1))
        edit = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = bytes([draw(st.integers(0, 255))])
        if edit == "flip":
            payload = payload[:at] + byte + payload[at + 1 :]
        elif edit == "insert":
            payload = payload[:at] + byte + payload[at:]
        else:
            payload = payload[:at] + payload[at + 1 :]
    return device, payload


@settings(max_examples=500)
@given(mutated_payloads(), st.sampled_from(["own", "other", "stranger"]))
def test_signed_mutated_payloads_fast_path_agrees_with_verify_event(drawn, signer):
    # Properly signed, so every verdict rests on the payload checks, not on the signature.
    device, payload = drawn
    kid = device if signer != "other" else next(d for d in sorted(SECRETS) if d != device)
    secret = SECRETS[kid] if signer != "stranger" else STRANGER
    assert_agree(sign1(secret, kid.encode(), payload))


def head(major: int, value: int, size: int | None = None) -> bytes:
    """A CBOR head; `size` forces a longer (non-deterministic) argument of 1, 2, 4 or 8 bytes."""
    if size is None:
        out = bytearray()
        _head(major, value, out)
        return bytes(out)
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[size]]) + value.to_bytes(size, "big")


def bstr(data: bytes, size: int | None = None) -> bytes:
    return head(2, len(data), size) + data


def longer(data: bytes) -> int:
    """A head argument size one step longer than the shortest for this byte string."""
    return 1 if len(data) < 24 else 2 if len(data) < 256 else 4


PROTECTED = {  # protected header bytes other than FORMATS.md §1's canonical({1: -8, 4: kid})
    "reordered": lambda kid: b"\xa2\x04" + bstr(kid) + b"\x01\x27",
    "long kid head": lambda kid: b"\xa2\x01\x27\x04" + bstr(kid, 2),
    "alg -7": lambda kid: canonical({1: -7, 4: kid}),
    "text kid": lambda kid: canonical({1: ALG_EDDSA, 4: kid.decode()}),
    "extra label": lambda kid: canonical({1: ALG_EDDSA, 4: kid, 5: b""}),
    "no kid": lambda kid: canonical({1: ALG_EDDSA}),
    "indefinite map": lambda kid: b"\xbf\x01\x27\x04" + bstr(kid) + b"\xff",
    "kid with a NUL": lambda kid: canonical({1: ALG_EDDSA, 4: kid + b"\x00"}),
    "kid not UTF-8": lambda kid: canonical({1: ALG_EDDSA, 4: kid[:-1] + b"\xff"}),
    "kid upper case": lambda kid: canonical({1: ALG_EDDSA, 4: kid.upper()}),
}
ENVELOPE_DEVIATIONS = sorted(
    [*PROTECTED, "tag head long", "tag 17", "untagged", "array head long", "three items",
     "five items", "indefinite array", "protected head long", "unprotected head long",
     "unprotected indefinite", "unprotected not empty", "unprotected array", "payload head long",
     "payload head 8 bytes", "signature head long", "signature 65 bytes", "trailing byte",
     "signature 63 bytes and 1 more", "signature as text",
     "cut short"]
)  # fmt: skip


def envelope(device: str, payload: bytes, deviations: Iterable[str] = ()) -> bytes:
    """A COSE_Sign1 with a valid signature over its protected bytes and payload, in FORMATS.md
    §1's one deterministic form or with the named deviations: the signature covers neither the
    heads nor the rest of the envelope, so each deviation leaves it valid."""
    kid = device.encode()
    protected = canonical({1: ALG_EDDSA, 4: kid})
    for name in deviations:
        protected = PROTECTED[name](kid) if name in PROTECTED else protected
    signature = Ed25519PrivateKey.from_private_bytes(SECRETS[device]).sign(
        sig_structure(protected, payload)
    )
    has = set(deviations).__contains__
    items = [
        bstr(protected, longer(protected) if has("protected head long") else None),
        (b"\xb8\x00" if has("unprotected head long") else b"\xbf\xff" if has("unprotected indefinite")
         else b"\xa1\x01\x27" if has("unprotected not empty") else b"\x80"
         if has("unprotected array") else b"\xa0"),
        bstr(payload, 8 if has("payload head 8 bytes") else longer(payload) if has("payload head long") else None),
        bstr(signature + b"\x00" * has("signature 65 bytes"), 2 if has("signature head long") else None),
    ]  # fmt: skip
    if has("signature 63 bytes and 1 more"):  # the same bytes, one of them outside the bstr
        items[3] = b"\x58\x3f" + signature
    if has("signature as text"):
        items[3] = b"\x78\x40" + signature
    if has("five items"):
        items.append(b"\xa0")
    array = (b"\x98\x04" if has("array head long") else b"\x83" if has("three items")
             else b"\x85" if has("five items") else b"\x9f" if has("indefinite array") else b"\x84")  # fmt: skip
    message = array + b"".join(items) + (b"\xff" if has("indefinite array") else b"")
    tag = b"\xd8\x12" if has("tag head long") else b"\xd1" if has("tag 17") else b"\xd2"
    message = (b"" if has("untagged") else tag) + message + b"\x00" * has("trailing byte")
    return message[:-1] if has("cut short") else message


BIG_HEALTH = {f"k{number:02d}": "v" * 64 for number in range(8)}  # payload ≥ 256: 2-byte head
HUGE_HEALTH = {f"k{number:02d}": "v" * 64 for number in range(16)}  # message > 1024 bytes


@pytest.mark.parametrize("event_type", ["arrive", "door_open", "big health", "huge health"])
@pytest.mark.parametrize("device", sorted(SECRETS))
def test_each_envelope_deviation_is_refused_by_both_paths(device, event_type):
    if event_type.endswith("health"):
        x = BIG_HEALTH if event_type == "big health" else HUGE_HEALTH
        payload = canonical({**valid_fields(device, "health"), 10: x})
    else:
        payload = canonical(valid_fields(device, event_type))
    verifier = EventVerifier(PUBLIC.get)
    accepted = assert_agree(envelope(device, payload), verifier)
    assert (accepted is not None) == (event_type != "huge health")
    for deviation in ENVELOPE_DEVIATIONS:
        assert assert_agree(envelope(device, payload, [deviation]), verifier) is None, deviation


@settings(max_examples=300)
@given(
    device=st.sampled_from(sorted(SECRETS)),
    event_type=st.sampled_from(sorted(BASE)),
    deviations=st.sets(st.sampled_from(ENVELOPE_DEVIATIONS), max_size=3),
)
def test_envelope_byte_forms_fast_path_agrees_with_verify_event(device, event_type, deviations):
    # A trailing byte and then one cut off again is the valid envelope: not a deviation.
    assume(not {"cut short", "trailing byte"} <= deviations)
    payload = canonical(valid_fields(device, event_type))
    accepted = assert_agree(envelope(device, payload, sorted(deviations)))
    assert (accepted is not None) == (not deviations)


X_NAMES = ["via", "sun", "nonce", "sig", "alarm", "ctr", "offset_ms", "src", "what", "z"]
DROP = object()


def single_mutations(event_type: str) -> Iterator[dict[Any, Any]]:
    """Each payload key and each x field in turn set to each odd value or dropped, and each key
    replaced by each odd key: the fields of one event with one thing wrong (or, now and then,
    still right)."""
    fields = valid_fields("tag-0042", event_type)
    for key in range(12):
        for value in [*ODD_VALUES, DROP]:
            changed = {k: v for k, v in fields.items() if k != key}
            yield changed if value is DROP else {**changed, key: value}
    for key in fields:
        for odd_key in ODD_KEYS:
            changed = {k: v for k, v in fields.items() if k != key}
            yield {**changed, odd_key: fields[key]}
    x = fields.get(10, {})
    for name in X_NAMES:
        for value in [*ODD_VALUES, DROP]:
            changed = {k: v for k, v in x.items() if k != name}
            yield {**fields, 10: changed if value is DROP else {**changed, name: value}}


@pytest.mark.parametrize("event_type", sorted(BASE))
def test_every_single_field_mutation_fast_path_agrees_with_verify_event(event_type):
    verifier = EventVerifier(PUBLIC.get)
    accepted = 0
    for fields in single_mutations(event_type):
        message = sign1(SECRETS["tag-0042"], b"tag-0042", encode(fields, "canonical"))
        accepted += assert_agree(message, verifier) is not None
    assert accepted > 0  # the unchanged values among the mutations, at least


def test_vectors_fast_path_agrees_with_verify_event():
    index = json.loads((VECTORS / "index.json").read_text())
    keys = {label: bytes.fromhex(pair["public"]) for label, pair in index["keys"].items()}
    events = [v for v in index["vectors"] if v["kind"] == "event"]
    accepted = 0
    for vector in events:
        message = (VECTORS / vector["file"]).read_bytes()
        public = keys[vector["key"]]
        fast = EventVerifier(lambda _device, public=public: public).event(message)
        if vector["expect"] == "valid":
            assert fast == verify_event(message, public), vector["name"]
            accepted += 1
        else:
            assert fast is None, vector["name"]
    assert accepted >= len(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(BASE))
def test_usual_events_need_no_second_payload_check(event_type, monkeypatch):
    # The fast path decides these by itself: decode_payload runs only for free-form x maps.
    calls = []

    def counted(*args: Any) -> Event:
        calls.append(args)
        raise BadPayload("counted")

    monkeypatch.setattr(events_module, "decode_payload", counted)
    fields = valid_fields("lock-7", event_type)
    messages = [sign1(SECRETS["lock-7"], b"lock-7", canonical(fields))]
    if event_type in ("arrive", "depart"):
        for x in (PHONE, {"via": "phone"}, {"via": "lock", "sun": b"\x01"}):
            messages.append(sign1(SECRETS["lock-7"], b"lock-7", canonical({**fields, 10: x})))
    for message in messages:
        event = EventVerifier(PUBLIC.get).event(message)
        if event_type in ("tamper", "health"):
            assert event is None and len(calls) == 1
        else:
            assert event is not None and event.type == event_type and not calls


def test_bool_keys_and_version_are_refused_by_both_paths():
    # True/False compare equal to 1/0: the strict path once took them as keys 1 and 0.
    fields = valid_fields("tag-0042", "door_open")
    as_true = {**{k: v for k, v in fields.items() if k != 1}, True: "tag-0042"}
    version_true = {**fields, 0: True}
    for payload in (canonical(as_true), canonical(version_true)):
        message = sign1(SECRETS["tag-0042"], b"tag-0042", payload)
        assert strict_verdict(message) in ("UnknownField", "UnsupportedVersion")
        assert fast_verdict(message) is None


def test_build_evidence_is_the_same_with_and_without_the_fast_path(monkeypatch):
    registry = Registry()
    for device, public in PUBLIC.items():
        registry.customers[f"c-{device}"] = Customer(f"c-{device}")
        registry.devices[device] = Device(device, f"c-{device}", "tag", public)
    messages, prev = [], bytes(32)
    for seq, event_type in enumerate(["clock_sync", "arrive", "depart", "health", "arrive"], 1):
        fields = {**valid_fields("tag-0042", event_type, seq), 9: prev}
        payload = canonical(fields)
        messages.append(sign1(SECRETS["tag-0042"], b"tag-0042", payload))
        prev = hashlib.sha256(payload).digest()
    good = messages[1]
    messages += [
        good,  # a duplicate
        good[:-1] + bytes([good[-1] ^ 1]),  # bad signature
        sign1(STRANGER, b"nobody", good[20:]),  # unregistered
        b"\xd8\x12" + good[1:],  # non-deterministic tag head
        sign1(SECRETS["lock-7"], b"lock-7", canonical(valid_fields("tag-0042", "arrive"))),
    ]
    fast = build_evidence(registry, messages)
    monkeypatch.setattr(EventVerifier, "event", lambda self, message: None)
    strict = build_evidence(registry, messages)
    assert fast == strict
    assert len(fast.presences) == 2 and len(fast.issues) >= 6


def cbor2_framing(data: bytes) -> list[bytes]:
    stream, items = io.BytesIO(data), []
    while stream.tell() < len(data):
        start = stream.tell()
        cbor2.load(stream)
        items.append(data[start : stream.tell()])
    return items


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(SECRETS)),
            st.sampled_from(sorted(BASE)),
            st.sets(st.sampled_from(ENVELOPE_DEVIATIONS), max_size=2),
        ),
        max_size=6,
    ),
    st.booleans(),
)
def test_read_messages_frames_items_as_cbor2_does(tmp_path_factory, items, cut):
    # read_messages frames the usual COSE_Sign1 from its heads alone; any other item, or a
    # sequence cut off in an item, goes through cbor2 as before.
    data = b"".join(
        envelope(device, canonical(valid_fields(device, event_type)), sorted(chosen))
        if event_type != "health"
        else envelope(device, canonical({**valid_fields(device, "health"), 10: BIG_HEALTH}))
        for device, event_type, chosen in items
    )
    data = data[:-1] if cut else data
    path = tmp_path_factory.mktemp("bundle") / "evidence.cbor-seq"
    path.write_bytes(data)
    try:
        expected = cbor2_framing(data)
    except Exception:
        with pytest.raises(EvidenceError, match="not a CBOR item"):
            list(read_messages(path))
    else:
        assert [message for _, message in read_messages(path)] == expected


def test_a_verifier_kept_across_batches_follows_each_batchs_keys():
    """The collector keeps one EventVerifier per thread and gives it each batch's keys: a device
    learned under one key counts only while that key is still the one offered."""
    message = envelope("tag-0042", canonical(valid_fields("tag-0042", "arrive")))
    verifier = EventVerifier(PUBLIC.get)
    assert verifier.event(message) is not None
    verifier.use({}.get)  # the device is no longer registered
    assert verifier.event(message) is None
    verifier.use({"tag-0042": STRANGER}.get)  # registered again, under another key
    assert verifier.event(message) is None
    verifier.use({"lock-7": PUBLIC["lock-7"]}.get)  # a batch without it
    assert verifier.event(message) is None
    verifier.use(PUBLIC.get)
    assert verifier.event(message) == strict_verdict(message)

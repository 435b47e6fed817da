"""The checked-in vectors (tests/vectors/) are the contract: the host accepts and rejects exactly
as they say, the device builds the valid events byte for byte and obeys or refuses the commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from signing_support import VECTORS, device_module, fakes_module

from kvitto.evidence import cose
from kvitto.evidence.chain import verify_stream
from kvitto.evidence.commands import verify_command
from kvitto.evidence.cose import COMMAND_TYPES, EVENT_TYPES, EvidenceError
from kvitto.evidence.events import verify_event

INDEX = json.loads((VECTORS / "index.json").read_text())
KEYS = {
    label: {k: bytes.fromhex(v) for k, v in pair.items()} for label, pair in INDEX["keys"].items()
}
BY_KIND: dict[str, list[dict]] = {}
for _vector in INDEX["vectors"]:
    BY_KIND.setdefault(_vector["kind"], []).append(_vector)


VALID_EVENTS = [v for v in BY_KIND["event"] if v["expect"] == "valid" and "fields" in v]


def message(vector: dict) -> bytes:
    return (VECTORS / vector["file"]).read_bytes()


def outcome(call) -> str:
    try:
        call()
    except EvidenceError as error:
        return type(error).__name__
    return "valid"


def unhex(fields: dict) -> dict:
    return {
        key: bytes.fromhex(value["hex"]) if isinstance(value, dict) and "hex" in value else value
        for key, value in fields.items()
    }


def test_there_are_enough_vectors_of_each_kind():
    assert len(INDEX["vectors"]) >= 20
    valid_types = {v["fields"]["type"] for v in VALID_EVENTS}
    assert valid_types == EVENT_TYPES
    expected_failures = {v["expect"] for v in INDEX["vectors"]}
    for name in ("BadSignature", "KidMismatch", "NonCanonical", "UnknownAlgorithm", "Truncated",
                 "Oversized", "BrokenChain"):  # fmt: skip
        assert name in expected_failures
    assert {v["fields"]["7"] for v in BY_KIND["command"] if v["device"] == "obey"} == (
        COMMAND_TYPES
    )


@pytest.mark.parametrize("vector", BY_KIND["event"], ids=lambda v: v["name"])
def test_host_judges_each_event_as_the_vector_says(vector):
    public = KEYS[vector["key"]]["public"]
    assert outcome(lambda: verify_event(message(vector), public)) == vector["expect"]


@pytest.mark.parametrize("vector", BY_KIND["stream"], ids=lambda v: v["name"])
def test_host_judges_each_stream_as_the_vector_says(vector):
    public = KEYS[vector["key"]]["public"]
    messages = [(VECTORS / name).read_bytes() for name in vector["files"]]
    assert outcome(lambda: verify_stream(messages, public)) == vector["expect"]


@pytest.mark.parametrize("vector", BY_KIND["command"], ids=lambda v: v["name"])
def test_host_judges_each_command_as_the_vector_says(vector):
    org = KEYS["org"]["public"]
    check = lambda: verify_command(message(vector), org, vector["target"], vector["now"])  # noqa: E731
    assert outcome(check) == vector["expect"]


def test_every_error_class_is_distinct_and_named():
    names = {v["expect"] for v in INDEX["vectors"]} - {"valid"}
    for name in names:
        error = getattr(cose, name)
        assert issubclass(error, EvidenceError) and error is not EvidenceError


def device_rebuild_script() -> str:
    rows = [{"file": v["file"], "key": v["key"], "fields": v["fields"]} for v in VALID_EVENTS]
    return f"""
import json
from device.evidence import event
from device_signing import sign1
keys = {json.dumps({k: v["secret"] for k, v in INDEX["keys"].items()})}
def unhex(value):
    if isinstance(value, dict) and "hex" in value:
        return bytes.fromhex(value["hex"])
    if isinstance(value, dict):
        return dict((k, unhex(v)) for k, v in value.items())
    return value
for row in {json.dumps(rows)}:
    fields = unhex(row["fields"])
    payload = event.build_payload(**fields)
    print(row["file"], sign1(payload, fields["dev"], bytes.fromhex(keys[row["key"]])).hex())
"""


def test_device_builds_the_valid_events_byte_for_byte_on_cpython():
    event, device_signing = device_module("evidence.event"), fakes_module("device_signing")
    for vector in VALID_EVENTS:
        fields = unhex(vector["fields"])
        if "x" in fields:
            fields["x"] = unhex(fields["x"])
        payload = event.build_payload(**fields)
        made = device_signing.sign1(payload, fields["dev"], KEYS[vector["key"]]["secret"])
        assert made == message(vector), vector["name"]


def test_device_builds_the_valid_events_byte_for_byte_on_the_unix_port(micropython):
    lines = micropython(device_rebuild_script()).strip().splitlines()
    assert len(lines) == len(VALID_EVENTS)
    for line in lines:
        name, made = line.split()
        assert bytes.fromhex(made) == (VECTORS / name).read_bytes(), name


def test_device_obeys_and_refuses_commands_as_the_vectors_say(micropython):
    rows = [(v["name"], message(v).hex(), v["target"], v["last_seq"], v["now"])
            for v in BY_KIND["command"]]  # fmt: skip
    out = micropython(
        f"""
from device.evidence import event
org = bytes.fromhex({KEYS["org"]["public"].hex()!r})
for name, hexed, target, last_seq, now in {rows!r}:
    try:
        event.parse_command(bytes.fromhex(hexed), org, target, last_seq, now)
        print(name, "obey")
    except event.CommandRefused as refused:
        print(name, "refuse:" + refused.reason)
"""
    )
    got = dict(line.split() for line in out.strip().splitlines())
    assert got == {v["name"]: v["device"] for v in BY_KIND["command"]}


def test_device_cose_refuses_every_broken_envelope(micropython):
    # The device's own verify1 must refuse what the host refuses at the envelope level.
    envelope = ("BadSignature", "UnknownAlgorithm", "Truncated", "NotCBOR", "NonCanonical",
                "NotCoseSign1", "BadHeader")  # fmt: skip
    rows = [(v["name"], message(v).hex(), KEYS[v["key"]]["public"].hex())
            for v in BY_KIND["event"] if v["expect"] in envelope and v["name"] != "non-canonical-order"
            and v["name"] != "non-canonical-int"]  # fmt: skip
    out = micropython(
        f"""
from device.evidence import cose
for name, hexed, public in {rows!r}:
    try:
        cose.verify1(bytes.fromhex(hexed), bytes.fromhex(public))
        print(name, "accepted")
    except cose.COSEError:
        print(name, "refused")
"""
    )
    assert out.split()[1::2] == ["refused"] * len(rows)


def test_generator_still_makes_the_checked_in_files(tmp_path):
    subprocess.run(
        [sys.executable, str(VECTORS / "make_vectors.py"), str(tmp_path)], check=True, timeout=60
    )
    made = sorted(path.name for path in tmp_path.iterdir())
    checked_in = sorted(
        path.name
        for path in VECTORS.iterdir()
        if path.suffix == ".cbor" or path.name == "index.json"
    )
    assert made == checked_in
    for name in made:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


def test_vector_files_are_small_and_referenced():
    referenced = {v["file"] for v in INDEX["vectors"] if "file" in v}
    on_disk = {path.name for path in Path(VECTORS).glob("*.cbor")}
    assert referenced == on_disk

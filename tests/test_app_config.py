"""The device configuration and identity: a bad /config.json is refused with file and field,
the same verdicts under CPython and the unix port; the key is made once and kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))

from device.board import config  # noqa: E402

GOOD = {
    "device": "tag-0042",
    "role": "lock",
    "board": "sim",
    "broker": {"host": "127.0.0.1", "port": 1883, "user": "tag-0042", "password": "pw"},
    "salt": "00" * 16,
    "org_public_key": "11" * 32,
    "ntp": ["pool.ntp.org"],
    "lock": {"relock_ms": 5000},
}


def with_change(**changes) -> dict:
    settings = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is None:
            settings.pop(key)
        else:
            settings[key] = value
    return settings


def test_good_config_is_normalized():
    settings = config.validate(GOOD)
    assert settings["salt"] == bytes(16)
    assert settings["org_public_key"] == b"\x11" * 32
    assert settings["broker"]["tls"] is False and settings["broker"]["ca"] is None
    assert settings["lock"] == {
        "relock_ms": 5000,
        "fallback": "open_for_allowed",
        "door_open_s": 300,
    }
    assert settings["alarm"] == {"answer_s": 1800}
    assert settings["health_s"] == 900  # a health report every 15 minutes (issue #22)
    assert settings["tag_mode"] is False  # default: on for the tag role only
    assert config.validate(with_change(role="tag"))["tag_mode"] is True


CASES = [
    (dict(device="Tag 42"), "device", "[a-z0-9-]{3,32}"),
    (dict(role="door"), "role", "must be one of tag, lock, alarm"),
    (dict(salt="zz"), "salt", "not valid hex"),
    (dict(salt="00" * 4), "salt", "16 to 64 bytes"),
    (dict(org_public_key="11" * 31), "org_public_key", "must be 32 bytes"),
    (dict(broker={"host": "b", "port": 70000}), "broker.port", "between 1 and 65535"),
    (dict(broker={"port": 1883}), "broker.host", "non-empty string"),
    (dict(broker={"host": "b", "tls": "yes"}), "broker.tls", "true or false"),
    (dict(broker={"host": "b", "pasword": "x"}), "broker.pasword", "unknown field"),
    (dict(lock={"relock_ms": 10}), "lock.relock_ms", "between 500"),
    (dict(alarm={"answer_s": "30m"}), "alarm.answer_s", "whole number"),
    (dict(org_public_key=None), "org_public_key", "is missing"),
    (dict(colour="red"), "colour", "unknown field"),
    (dict(tag_mode="yes"), "tag_mode", "true or false"),
    # The broker names the session by the username; the device's client id is its id.
    (dict(broker={"host": "b", "user": "tag-0002"}), "broker.user", "must be the device id"),
]


@pytest.mark.parametrize("change,field,problem", CASES, ids=[c[1] for c in CASES])
def test_bad_config_names_field(change, field, problem):
    with pytest.raises(config.ConfigError) as error:
        config.validate(with_change(**change), "/config.json")
    assert str(error.value).startswith(f"/config.json: field '{field}': "), str(error.value)
    assert problem in str(error.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(config.ConfigError, match="no configuration on this device"):
        config.load(str(tmp_path / "config.json"))
    (tmp_path / "config.json").write_text('{"device": ')
    with pytest.raises(config.ConfigError, match="config.json: not valid JSON"):
        config.load(str(tmp_path / "config.json"))


def test_unix_port_agrees(micropython, tmp_path):
    for index, (change, _, _) in enumerate(CASES):
        (tmp_path / f"c{index}.json").write_text(json.dumps(with_change(**change)))
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    out = micropython(
        f"""
        from device.board import config
        good = config.load("{tmp_path}/good.json")
        print(good["salt"] == bytes(16), good["alarm"]["answer_s"])
        for index in range({len(CASES)}):
            try:
                config.load("{tmp_path}/c%d.json" % index)
                print("accepted")
            except config.ConfigError as error:
                print(str(error).split(": ")[1])
        """
    )
    lines = out.strip().splitlines()
    assert lines[0] == "True 1800"
    assert lines[1:] == [f"field '{field}'" for _, field, _ in CASES]


needs_ed25519 = pytest.mark.skipif(
    not (ROOT / "firmware/device/evidence/ed25519.py").exists(),
    reason="device.evidence.ed25519 has not landed yet (issue: Signed evidence)",
)


@needs_ed25519
def test_identity_made_once_kept_and_proves(micropython, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    script = f"""
        import os
        os.chdir("{tmp_path}")
        from device.evidence import identity
        calls = []
        def rng(n):
            calls.append(n)
            return bytes(range(n))
        public = identity.load_or_create(rng)
        from device.evidence import proof
        print(proof.public_key_hex())
        print(proof.prove_hex("0102030405060708"))
        print(len(calls))
        """
    first = micropython(script).split()
    second = micropython(script).split()
    assert first[0] == second[0], "the key is created once and then kept"
    assert first[2] == "1" and second[2] == "0", "the RNG is used on first boot only"
    assert (tmp_path / "key.bin").read_bytes() == bytes(range(32))
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(first[0]))
    public.verify(bytes.fromhex(first[1]), b"kvitto-provision" + bytes(range(1, 9)))


@needs_ed25519
def test_damaged_key_is_refused_not_replaced(micropython, tmp_path):
    (tmp_path / "key.bin").write_bytes(b"short")
    out = micropython(
        f"""
        import os
        os.chdir("{tmp_path}")
        from device.evidence import identity
        try:
            identity.load_or_create()
        except ValueError as error:
            print("refused", error)
        """
    )
    assert "refused key.bin holds 5 bytes" in out
    assert (tmp_path / "key.bin").read_bytes() == b"short"

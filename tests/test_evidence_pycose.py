"""An independent COSE library (pycose) verifies the events the device makes on the unix port.

pycose 1.1 needs cbor2 < 6, so it runs in its own venv (.venv/pycose, built by `make setup`)
through tests/pycose_verify.py; the product itself uses cbor2 directly.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from signing_support import TESTS, VECTORS

from conftest import IN_CI

PYCOSE_PYTHON = Path(sys.executable).parent.parent / "pycose" / "bin" / "python"
SECRET = hashlib.sha256(b"kvitto pycose test tag-0042").digest()
PUBLIC = Ed25519PrivateKey.from_private_bytes(SECRET).public_key().public_bytes_raw()


@pytest.fixture(scope="module")
def pycose_python() -> Path:
    if not PYCOSE_PYTHON.exists():
        message = f"pycose venv missing at {PYCOSE_PYTHON}: run `make setup`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return PYCOSE_PYTHON


def pycose_verdicts(python: Path, items: list[dict], tmp_path: Path) -> list[str]:
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(items))
    result = subprocess.run(
        [str(python), str(TESTS / "pycose_verify.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_pycose_verifies_device_made_events(pycose_python, micropython, tmp_path):
    out = micropython(
        f"""
        import hashlib
        from device.evidence import event
        from device_signing import sign1
        secret = {SECRET!r}
        prev = bytes(32)
        cases = [
            ("boot", None, None, None),
            ("clock_sync", None, None, {{"offset_ms": -40}}),
            ("arrive", 1790834520, b"\\x19" * 16, {{"via": "badge"}}),
            ("depart", 1790836260, b"\\x19" * 16, {{"via": "ntag424", "sun": bytes(24)}}),
            ("alarm_call", 1790836300, None, {{"alarm": 2}}),
            ("tag_read", 1790836400, None, {{"ctr": 99}}),
            ("door_open", None, None, None),
        ]
        for seq, (kind, t, cred, x) in enumerate(cases, 1):
            payload = event.build_payload("tag-0042", seq, 4, seq * 1000, kind, prev,
                                          t=t, sync=None if t is None else 12, cred=cred, x=x)
            print(payload.hex(), sign1(payload, "tag-0042", secret).hex())
            prev = hashlib.sha256(payload).digest()
        """
    )
    pairs = [line.split() for line in out.strip().splitlines()]
    assert len(pairs) == 7
    items = [{"message": message, "public": PUBLIC.hex()} for _, message in pairs]
    verdicts = pycose_verdicts(pycose_python, items, tmp_path)
    assert verdicts == [f"ok EDDSA {payload}" for payload, _ in pairs]


def test_pycose_refuses_a_forged_event(pycose_python, tmp_path):
    index = json.loads((VECTORS / "index.json").read_text())
    public = index["keys"]["tag-0042"]["public"]
    items = [
        {"message": (VECTORS / name).read_bytes().hex(), "public": public}
        for name in ("event-04-arrive.cbor", "bad-signature.cbor", "wrong-key.cbor")
    ]
    verdicts = pycose_verdicts(pycose_python, items, tmp_path)
    assert verdicts[0].startswith("ok EDDSA")
    assert [v.split()[0] for v in verdicts[1:]] == ["fail", "fail"]

"""Signed firmware releases (issue #22): `kvitto release key` and `sign` make a manifest that
the device's own verifier (device.evidence.release, the real firmware code under the unix port)
accepts, and it refuses a tampered or truncated image, a wrong key, an older or equal version
and another chip's image, each with its reason."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from kvitto.cli import cli, main
from kvitto.evidence.cose import EvidenceError
from kvitto.evidence.release import sign_release, verify_release
from kvitto.fleet.release import check_release, make_release_key
from kvitto.store.keys import RELEASE_KEY, load_ed25519_key

IMAGE = bytes(range(256)) * 40 + b"kvitto"


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "pki"
    make_release_key(folder)
    return folder


def test_release_key_is_private_and_never_overwritten(pki, capsys):
    assert stat.S_IMODE((pki / RELEASE_KEY).stat().st_mode) == 0o600
    with pytest.raises(SystemExit) as exit_info:
        main(["release", "key", "--pki", str(pki)])
    assert exit_info.value.code == 2
    assert "refusing to overwrite a key" in capsys.readouterr().err


def test_sign_writes_a_manifest_the_host_checks(pki, tmp_path):
    image = tmp_path / "fw.bin"
    image.write_bytes(IMAGE)
    result = CliRunner().invoke(
        cli, ["release", "sign", str(image), "--pki", str(pki), "--version", "0.2.0",
              "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["version"] == "0.2.0" and document["size"] == len(IMAGE)
    assert document["manifest"] == str(tmp_path / "fw.bin.release")
    release = check_release(pki, image, tmp_path / "fw.bin.release")
    assert release.chip == "esp32"
    image.write_bytes(IMAGE[:-1] + b"X")
    with pytest.raises(Exception, match="SHA-256"):
        check_release(pki, image, tmp_path / "fw.bin.release")


def test_a_bad_version_is_a_one_line_error(pki, tmp_path, capsys):
    image = tmp_path / "fw.bin"
    image.write_bytes(IMAGE)
    with pytest.raises(SystemExit) as exit_info:
        main(["release", "sign", str(image), "--pki", str(pki), "--version", "v2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("numbers with dots, e.g. 0.2.0")


DEVICE_CHECK = """
from device.evidence import release
def attempt(manifest, image, floor="0.1.0", chip="esp32", public=PUBLIC, cut=None):
    try:
        m = release.parse(manifest, public, floor, chip)
        digest = release.Digest(m)
        data = image if cut is None else image[:cut]
        for start in range(0, len(data), 1000):
            digest.update(data[start:start + 1000])
        digest.verify()
        return "ok " + m.version
    except release.ReleaseRefused as error:
        return "refused " + error.reason
"""


def test_the_device_verifier_accepts_the_release_and_refuses_each_fault(pki, micropython):
    secret = load_ed25519_key(pki / RELEASE_KEY, "release key")
    public = (pki / "release.pub").read_text().strip()
    good = sign_release(secret, IMAGE, "0.2.0", "esp32")
    assert verify_release(good, bytes.fromhex(public)).version == "0.2.0"
    tampered = IMAGE[:100] + b"\xff" + IMAGE[101:]
    foreign = sign_release(bytes(32), IMAGE, "0.2.0", "esp32")
    with pytest.raises(EvidenceError):
        verify_release(foreign, bytes.fromhex(public))
    cases = {
        "good": (good, IMAGE, {}),
        "tampered": (good, tampered, {}),
        "truncated": (good, IMAGE, {"cut": len(IMAGE) - 1}),
        "longer": (good, IMAGE + b"!", {}),
        "wrong key": (foreign, IMAGE, {}),
        "older": (sign_release(secret, IMAGE, "0.0.9", "esp32"), IMAGE, {}),
        "same": (good, IMAGE, {"floor": "0.2.0"}),
        "other chip": (sign_release(secret, IMAGE, "0.2.0", "esp32s3"), IMAGE, {}),
        "no key": (good, IMAGE, {"public": None}),
        "broken manifest": (good[:-3], IMAGE, {}),
    }
    lines = [f"PUBLIC = bytes.fromhex({public!r})", DEVICE_CHECK]
    for name, (manifest, image, options) in cases.items():
        extra = "".join(f", {key}={value!r}" for key, value in options.items())
        lines.append(f"print({name!r} + '|' + attempt({manifest!r}, {image!r}{extra}))")
    out = micropython("\n".join(lines))
    results = dict(line.split("|") for line in out.splitlines())
    assert results == {
        "good": "ok 0.2.0",
        "tampered": "refused hash",
        "truncated": "refused truncated",
        "longer": "refused size",
        "wrong key": "refused signature",
        "older": "refused version",
        "same": "refused version",
        "other chip": "refused chip",
        "no key": "refused key",
        "broken manifest": "refused signature",
    }

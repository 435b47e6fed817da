"""`kvitto enroll` and `kvitto revoke`: credential ids as the device computes them, NTAG 424 keys
diversified per AN10922 and accepted by the host's SUN check, phones by public key, revocation
kept in the registry."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.cli import cli
from kvitto.errors import KvittoError
from kvitto.evidence.ntag424 import an10922_diversify, sdm_mac, verify_sun
from kvitto.evidence.phone import phone_key_id
from kvitto.install.enroll import credential_id, ntag424_badge_keys, ntag424_masters, parse_uid
from kvitto.install.pki import ensure_org
from kvitto.store.db import open_store
from kvitto.store.registry import Registry


@pytest.fixture
def setup(tmp_path):
    pki = tmp_path / "pki"
    org = ensure_org(pki)
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    open_store(url).close()  # `kvitto init`
    return url, pki, org.credential_salt


def run(*args):
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    return result


def registry(url):
    return Registry(open_store(url))


def test_an10922_published_example():
    # NXP AN10922 §2.2.1: AES-128 key diversification example.
    master = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    m = bytes.fromhex("04782E21801D803042F54E585020416275")  # UID ‖ AID ‖ system identifier
    assert an10922_diversify(master, m).hex().upper() == "A8DD63A3B89D54B37CA802473FDA9175"


@pytest.mark.parametrize(
    "typed,raw",
    [
        ("04a1b2c3", "04a1b2c3"),
        ("04:A1:B2:C3", "04a1b2c3"),
        ("04 78 2e 21 80 1d 80", "04782e21801d80"),
    ],
)
def test_typed_uids(typed, raw):
    assert parse_uid(typed) == bytes.fromhex(raw)


@pytest.mark.parametrize("bad", ["04a1b2", "zz112233", "04a1b2c3d4"])
def test_bad_uids_are_refused(bad):
    with pytest.raises(KvittoError, match="UID"):
        parse_uid(bad)


def test_badge_enrolled_under_the_id_the_device_computes(setup):
    url, pki, salt = setup
    result = run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-07",
                 "--provider", "p-1", "--badge", "04:A1:B2:C3")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["credential"] == credential_id(salt, "04a1b2c3")
    row = registry(url).credential(report["credential"])
    assert row is not None and (row.staff, row.provider, row.kind) == ("s-07", "p-1", "badge")


def test_same_badge_for_another_staff_member_is_refused(setup):
    url, pki, _ = setup
    base = [
        "enroll",
        "--store",
        url,
        "--pki",
        str(pki),
        "--provider",
        "p-1",
        "--badge",
        "04a1b2c3",
    ]
    assert run(*base, "--staff", "s-07").exit_code == 0
    result = run(*base, "--staff", "s-08")
    assert result.exit_code != 0
    assert isinstance(result.exception, KvittoError)


def test_ntag424_keys_diversified_and_sun_verifies(setup):
    url, pki, salt = setup
    uid = "04782E21801D80"
    result = run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-07",
                 "--provider", "p-1", "--ntag424", uid, "--show-keys")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    keys = {int(n): bytes.fromhex(k) for n, k in report["keys"].items()}
    assert sorted(keys) == [0, 1, 2, 3, 4] and len(set(keys.values())) == 5
    masters = ntag424_masters(pki)
    other = ntag424_badge_keys(masters, bytes.fromhex("04000000000001"))
    # per-badge keys differ between badges; the meta read key is shared by design
    assert all(other[n] != keys[n] for n in (0, 2, 3, 4)) and other[1] == keys[1]
    # A SUN the personalised badge would produce verifies on the host with only the masters.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    counter = 5
    picc_plain = bytes([0xC7]) + bytes.fromhex(uid) + counter.to_bytes(3, "little") + bytes(5)
    encryptor = Cipher(algorithms.AES(keys[1]), modes.CBC(bytes(16))).encryptor()
    picc = encryptor.update(picc_plain) + encryptor.finalize()
    mac = sdm_mac(keys[2], bytes.fromhex(uid), counter)
    found = verify_sun(picc + mac, masters.meta_read, file_master=masters.file_read)
    assert found.uid.hex() == uid.lower() and found.counter == counter
    assert report["credential"] == credential_id(salt, bytes.fromhex(uid))
    assert registry(url).credential(report["credential"]).kind == "ntag424"


def test_phone_enrolled_by_public_key(setup):
    url, pki, salt = setup
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    result = run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-09",
                 "--provider", "p-2", "--phone-key", public.hex())  # fmt: skip
    assert result.exit_code == 0, result.output
    ident = json.loads(result.output)["credential"]
    assert ident == credential_id(salt, phone_key_id(public))
    assert registry(url).credential(ident).key_material == public


def test_enroll_needs_exactly_one_credential(setup):
    url, pki, _ = setup
    result = run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-07",
                 "--provider", "p-1")  # fmt: skip
    assert isinstance(result.exception, KvittoError)
    assert "exactly one" in str(result.exception)


def test_revoke_credential_and_device_are_kept(setup):
    url, pki, _ = setup
    run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-07", "--provider", "p-1",
        "--badge", "04a1b2c3")  # fmt: skip
    reg = registry(url)
    reg.add_customer("c-1001")
    reg.add_device("tag-0042", "c-1001", "tag", bytes(range(32)))
    ident = reg.credentials()[0].id
    result = run("revoke", "--store", url, "--credential", ident, "--when", "2026-10-01")
    assert result.exit_code == 0, result.output
    result = run("revoke", "--store", url, "--device", "tag-0042", "--when", "2026-10-02")
    assert json.loads(result.output) == {
        "device": "tag-0042", "customer": "c-1001", "revoked": "2026-10-02"
    }  # fmt: skip
    reg = registry(url)
    assert reg.credential(ident).revoked == "2026-10-01"
    assert reg.device("tag-0042").revoked == "2026-10-02"  # still there, marked
    # A revoked device cannot be registered again under its id.
    with pytest.raises(KvittoError, match="revoked"):
        reg.add_device("tag-0042", "c-1001", "tag", bytes(range(32)))
    result = run("revoke", "--store", url, "--device", "tag-9999")
    assert "not registered" in str(result.exception)


def test_list_the_registry_and_revoke_a_leaving_staff_member(setup):
    """#24 item 14: no command listed devices, credentials or customers, and revoking a
    leaving staff member needed the 32-digit id printed at enrolment."""
    import json as json_module

    from cli_support import run_kvitto

    url, pki, salt = setup
    for badge in ("04:A1:B2:C3", "04:A1:B2:C4"):
        assert run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-12",
                   "--provider", "p-1", "--badge", badge).exit_code == 0  # fmt: skip
    assert run("enroll", "--store", url, "--pki", str(pki), "--staff", "s-07",
               "--provider", "p-1", "--badge", "04:A1:B2:C5").exit_code == 0  # fmt: skip
    code, out, err = run_kvitto(["registry", "list", "staff", "--store", url, "--format", "json"])
    assert code == 0, err
    staff = json_module.loads(out)
    assert sorted(row["staff"] for row in staff) == ["s-07", "s-12", "s-12"]
    code, out, err = run_kvitto(["revoke", "--store", url, "--staff", "s-12"])
    assert code == 0 and "2 credential(s) of s-12" in out, err
    code, out, _ = run_kvitto(["registry", "list", "staff", "--store", url])
    lines = out.strip().splitlines()
    assert sum("revoked" in line for line in lines) == 2
    assert all("revoked" not in line for line in lines if line.startswith("s-07"))
    code, _, err = run_kvitto(["revoke", "--store", url, "--staff", "s-12"])
    assert code == 2 and "no live credential" in err
    for what in ("devices", "customers"):
        assert run_kvitto(["registry", "list", what, "--store", url])[0] == 0

"""kvitto ingest and export-case: offline evidence in, case bundle (FORMATS.md §3) out."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import tomllib
from collect_support import FakeDevice

from kvitto.cli import main
from kvitto.collect.intake import ingest
from kvitto.errors import KvittoError
from kvitto.store.db import open_store
from kvitto.store.registry import Registry
from kvitto.verify.export import export_case

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "examples" / "case-minimal"


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path}/kvitto.db"


@pytest.fixture
def example(tmp_path):
    if not EXAMPLE.exists():
        pytest.skip(f"shared examples not beside the checkout ({EXAMPLE})")
    return EXAMPLE


def run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_example_bundle_ingests_once(example, store_url):
    with open_store(store_url) as store:
        Registry(store).import_toml(example / "registry.toml")
        first = ingest(store, example / "evidence.cbor-seq")
        assert (first.messages, first.stored, first.rejected, first.chain_broken) == (6, 6, 0, 0)
        again = ingest(store, example / "evidence.cbor-seq")
        assert (again.stored, again.duplicates) == (0, 6)
        assert [row[5] for row in store.events()] == [1] * 6


def test_jsonl_rejects_are_quarantined_with_file_and_line(tmp_path, store_url):
    device, stranger = FakeDevice("tag-0042"), FakeDevice("tag-0666")
    with open_store(store_url) as store:
        registry = Registry(store)
        registry.add_customer("c-1001")
        registry.add_device("tag-0042", "c-1001", "tag", device.public_key, "2026-09-01")
        good = device.events(3)
        broken = bytearray(good[2])
        broken[-3] ^= 0x40
        lines = [good[0], good[1], bytes(broken), stranger.next_event(), good[2], good[0]]
        path = tmp_path / "evidence.jsonl"
        path.write_text("".join(base64.b64encode(m).decode() + "\n" for m in lines))
        report = ingest(store, path)
        assert (report.stored, report.duplicates, report.rejected) == (3, 1, 2)
        assert report.reasons == {"bad-signature": 1, "unknown-device": 1}
        sources = [(source, reason.split(":")[0]) for source, _, _, reason, _ in
                   store.quarantined()]  # fmt: skip
        assert sources == [
            (f"{path} line 3", "bad-signature"),
            (f"{path} line 4", "unknown-device"),
        ]


def test_a_file_that_is_not_evidence_changes_nothing(tmp_path, store_url, capsys):
    device = FakeDevice("tag-0042")
    path = tmp_path / "evidence.cbor-seq"
    path.write_bytes(device.next_event() + b"\xff\xff")
    with open_store(store_url) as store:
        with pytest.raises(KvittoError, match=r"evidence.cbor-seq item 2"):
            ingest(store, path)
        assert store.event_count() == 0 and store.quarantined() == []
    code, _, err = run(["ingest", str(path), "--store", store_url], capsys)
    assert code == 2 and "item 2" in err


def test_ingest_command_reports_json(example, store_url, capsys):
    with open_store(store_url) as store:
        Registry(store).import_toml(example / "registry.toml")
    argv = ["ingest", str(example / "evidence.cbor-seq"), "--store", store_url]
    code, out, _ = run([*argv, "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out)["stored"] == 6
    code, out, _ = run(argv, capsys)
    assert code == 0 and "6 already stored" in out


def test_export_case_round_trips_the_example(example, tmp_path, store_url, capsys):
    with open_store(store_url) as store:
        Registry(store).import_toml(example / "registry.toml")
        ingest(store, example / "evidence.cbor-seq")
    out = tmp_path / "case"
    code, stdout, err = run(
        ["export-case", "--store", store_url, "--month", "2026-10", "--provider", "p-1",
         "--claims", str(example / "claims.csv"), "--orders", str(example / "orders.csv"),
         "--out", str(out), "--format", "json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["events"] == 6
    assert (out / "evidence.cbor-seq").read_bytes() == (example / "evidence.cbor-seq").read_bytes()
    assert tomllib.loads((out / "registry.toml").read_text()) == tomllib.loads(
        (example / "registry.toml").read_text()
    )
    for name in ("claims.csv", "orders.csv"):
        assert (out / name).read_bytes() == (example / name).read_bytes()


def test_export_case_leaves_out_other_months_and_customers(example, tmp_path, store_url):
    with open_store(store_url) as store:
        Registry(store).import_toml(example / "registry.toml")
        ingest(store, example / "evidence.cbor-seq")
        result = export_case(
            store, "2026-12", tmp_path / "december",
            claims=example / "claims.csv", orders=example / "orders.csv",
        )  # fmt: skip
        assert result.events == 0 and result.devices == 1
        claims = tmp_path / "claims.csv"
        shutil.copyfile(example / "claims.csv", claims)
        claims.write_text(claims.read_text().replace("c-1001", "c-9999", 1))
        with pytest.raises(KvittoError, match="c-9999"):
            export_case(store, "2026-10", tmp_path / "x", claims=claims)
        with pytest.raises(KvittoError, match="YYYY-MM"):
            export_case(store, "october", tmp_path / "x")


def test_a_conflicting_event_in_a_file_is_quarantined_under_its_item(tmp_path, store_url):
    device = FakeDevice("tag-0042")
    first = device.next_event("arrive")
    device.seq, device.prev = 0, bytes(32)
    clash = device.next_event("depart")
    path = tmp_path / "evidence.cbor-seq"
    path.write_bytes(first + clash)
    with open_store(store_url) as store:
        registry = Registry(store)
        registry.add_customer("c-1001")
        registry.add_device("tag-0042", "c-1001", "tag", device.public_key, "2026-09-01")
        report = ingest(store, path)
        assert (report.stored, report.rejected) == (1, 1)
        ((source, _, seq, reason, message),) = store.quarantined()
        assert (source, seq, message) == (f"{path} item 2", 1, clash)
        assert reason.startswith("conflict:")


def test_an_exported_case_verifies_like_the_original(example, tmp_path, store_url, capsys):
    """Collector side to verifier side: ingest, export-case, kvitto verify (FORMATS.md §3–4)."""
    with open_store(store_url) as store:
        Registry(store).import_toml(example / "registry.toml")
        ingest(store, example / "evidence.cbor-seq")
        export_case(
            store, "2026-10", tmp_path / "case",
            claims=example / "claims.csv", orders=example / "orders.csv",
        )  # fmt: skip
    code, out, err = run(
        ["verify", str(tmp_path / "case"), "--profile", "norrtalje", "--month", "2026-10",
         "--format", "json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    findings = {(f["claim_id"], f["rule"], f["outcome"]) for f in json.loads(out)["findings"]}
    # e-3: Norrtälje night time is follow_up asking for written documentation (RULES.md T1)
    assert findings == {("e-2", "E1", "reject"), ("e-3", "T1", "follow_up")}

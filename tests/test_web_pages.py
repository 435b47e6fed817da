"""kvitto serve's exports and imports: the billing basis, the case bundle with its records (an
offline auditor verifies it and sees the corrections), the plan and claims files with errors
that name file, line and field, and the web's commands."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import pytest
from web_support import (
    MONTH,
    PASSWORD,
    build_world,
    http_login,
    login,
    post,
    server_process,
    wait_listening,
)

from kvitto.verify.case import CaseError
from kvitto.web import records as chain
from kvitto.web.plan import import_plan


@pytest.fixture
def world(tmp_path):
    return build_world(tmp_path)


def test_the_case_bundle_carries_the_records(world, tmp_path):
    client = world.client()
    login(client, "samordnare-p1")
    post(client, "/avvikelser/k-1/ratta", {"reason_code": "annan-tid", "text": "",
                                            "end": "2026-11-27 08:30"}, page="/avvikelser/k-1")  # fmt: skip
    auditor = world.client()
    login(auditor, "uppfoljare-huddinge")
    decided = post(auditor, "/besok/p-1/k-2/beslut", {"rule": "E5", "decision": "reject",
                                                      "text": "ingen felanmälan"},
                   page="/besok/p-1/k-2")  # fmt: skip
    assert decided.status_code == 303
    answer = client.get(f"/manad/{MONTH}/arende.zip")
    assert answer.status_code == 200
    folder = tmp_path / "offline"
    zipfile.ZipFile(io.BytesIO(answer.content)).extractall(folder)
    case = folder / f"case-p-1-{MONTH}"
    assert {p.name for p in case.iterdir()} >= {"registry.toml", "orders.csv", "claims.csv",
                                                 "records.jsonl"}  # fmt: skip
    records = [chain.Record(**{**json.loads(line), "prev": bytes.fromhex(json.loads(line)["prev"]),
                               "hash": bytes.fromhex(json.loads(line)["hash"])})
               for line in (case / "records.jsonl").read_text().splitlines()]  # fmt: skip
    assert chain.verify_chain(records) == []  # an offline auditor checks the chain
    # ... and can with docs/formats.md (records.jsonl v1) alone, without kvitto's code
    import hashlib

    before = "0" * 64
    for line in (case / "records.jsonl").read_text().splitlines():
        fields = json.loads(line)
        content = {k: v for k, v in fields.items() if k not in ("prev", "hash")}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert fields["prev"] == before
        before = hashlib.sha256(bytes.fromhex(fields["prev"]) + canonical.encode()).hexdigest()
        assert fields["hash"] == before
    correction = next(r for r in records if r.kind == "correct")
    assert correction.body["before"] == {"end": "2026-11-27T08:50"}
    decision = next(r for r in records if r.kind == "decide")  # the auditor's, on the same chain
    assert (decision.claim_id, decision.body["rule"], decision.body["decision"]) == (
        "k-2", "E5", "reject")  # fmt: skip
    assert decision.actor == "uppfoljare-huddinge"
    # the bundle's claims are as corrected, and verify offline to the web's verdict
    from kvitto.verify.check import verify_case

    offline = verify_case(case, "huddinge", MONTH)
    assert {f.rule for f in offline.findings_for("k-1")} == {"D4"}
    exports = chain.records(world.store, chains=["p-1"], kinds=("export",))
    assert [r.body["what"] for r in exports] == ["case"]


def test_billing_exports_csv_and_json(world):
    client = world.client()
    login(client, "uppfoljare-huddinge")
    answer = client.get(f"/uppfoljning/p-1/{MONTH}/underlag.json")
    document = json.loads(answer.text)
    assert document["provider"] == "p-1" and document["month"] == MONTH
    assert {row["customer"] for row in document["billing"]} <= {"c-1001", "c-1002", "c-1003"}
    assert "attachment" in answer.headers["content-disposition"]
    csv_text = client.get(f"/uppfoljning/p-1/{MONTH}/underlag.csv").text
    assert csv_text.splitlines()[0] == "customer,category,payable_minutes,count"


def test_a_bad_plan_file_names_line_and_field_and_stores_nothing(world, tmp_path):
    before = world.store.execute("SELECT COUNT(*) FROM plan")[0][0]
    cases = {
        "customer,start,end\n": "line 1: missing column activities",
        "customer,start,end,activities\nc-1001,2026-12-01T08:00,2026-12-01T08:30,omsorg\n"
        "c-2001,2026-12-01T09:00,2026-12-01T09:30,omsorg\n": "line 3, field customer",
        "customer,start,end,activities\nc-1001,i morgon,2026-12-01T08:30,omsorg\n": "line 2, field start",
        "customer,start,end,activities\nc-1001,2026-12-01T08:00,2026-12-01T07:30,omsorg\n": "line 2, field end",
        "customer,start,end,activities\nc-1001,2026-12-01T08:00,2026-12-01T08:30,19121212-1212\n": "line 2, field activities",
    }  # fmt: skip
    for text, message in cases.items():
        path = tmp_path / "plan.csv"
        path.write_text(text)
        with pytest.raises(CaseError, match=message):
            import_plan(world.store, "p-1", path)
    assert world.store.execute("SELECT COUNT(*) FROM plan")[0][0] == before


def test_the_commands(world, tmp_path):
    env = {**os.environ, "KVITTO_PASSWORD": "ett-långt-lösenord-1"}
    run = [sys.executable, "-m", "kvitto"]
    added = subprocess.run(
        [*run, "user", "add", "samordnare-2", "--role", "coordinator", "--provider", "p-2",
         "--store", world.url, "--format", "json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["provider"] == "p-2"
    refused = subprocess.run(
        [*run, "user", "add", "19121212-1212", "--role", "admin", "--store", world.url],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.startswith("kvitto: ")
    plan = tmp_path / "bad-plan.csv"
    plan.write_text("customer,start,end,activities\nc-9,2026-12-01T08:00,2026-12-01T08:30,\n")
    answer = subprocess.run(
        [*run, "import-plan", str(plan), "--provider", "p-1", "--store", world.url],
        capture_output=True, text=True,
    )  # fmt: skip
    assert answer.returncode == 2
    assert f"{plan} line 2, field customer" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_the_visit_page_checks_each_signature_again(world):
    """The auditor's drill-down shows each event's signature as checked now against its
    device's key: a stored message altered after the collector took it shows as invalid."""
    import html
    import re

    auditor = world.client()
    login(auditor, "uppfoljare-huddinge")

    def statuses() -> dict[str, str]:
        page = html.unescape(auditor.get("/besok/p-1/k-1").text)
        timeline = page[page.index('id="timeline"') :].split("</section>")[0]
        rows = re.findall(r"<td[^>]*>(\w+)(?: \(\w+\))?</td>\s*<td[^>]*>tag-1001 #(\d+)</td>.*?"
                          r'<span class="(good|bad)">', timeline, re.S)  # fmt: skip
        return {f"{kind} #{seq}": status for kind, seq, status in rows}

    before = statuses()
    assert before and set(before.values()) == {"good"}, before
    arrive = next(key for key in before if key.startswith("ankomst"))
    seq = int(arrive.split("#")[1])
    message = bytearray(world.store.execute(
        "SELECT message FROM events WHERE device = 'tag-1001' AND seq = ?", (seq,))[0][0])  # fmt: skip
    message[-1] ^= 1  # the signature's last byte
    world.store.execute("UPDATE events SET message = ? WHERE device = 'tag-1001' AND seq = ?",
                        (bytes(message), seq))  # fmt: skip
    after = statuses()
    assert after[arrive] == "bad"
    assert {k: v for k, v in after.items() if k != arrive} == {
        k: v for k, v in before.items() if k != arrive}  # fmt: skip


def test_kvitto_serve_with_two_workers_keeps_the_session(world):
    """`kvitto serve --store URL --host H --port P --workers 2`: two server processes on one
    port; the session lives in the store, so whichever worker answers knows the login."""

    import httpx

    from conftest import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kvitto", "serve", "--store", world.url, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KVITTO_WEB_SECRET": "ab" * 32},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with server_process(process):
        wait_listening(base)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert http_login(client, "samordnare-p1", PASSWORD).status_code == 303
            answers = [client.get("/avvikelser") for _ in range(30)]
        assert {a.status_code for a in answers} == {200}
        assert all("samordnare-p1" in a.text for a in answers)

"""`kvitto demo` as a smoke test: the scripted day on real virtual boards, the real collector
and verify; the report holds the findings the scripted deviations must produce, and every
event the boards journaled reached the store, the case bundle and the verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from app_support import missing_firmware
from web_support import http_login, server_process, wait_listening

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)


def findings(document: dict) -> dict[str, dict[str, str]]:
    by_claim: dict[str, dict[str, str]] = {}
    for finding in document["findings"]:
        by_claim.setdefault(finding["claim_id"], {})[finding["rule"]] = finding["outcome"]
    return by_claim


def check_evidence(out: Path) -> dict:
    assert (out / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    document = json.loads((out / "report.json").read_text())
    # what the boards journaled is what was stored, exported and verified
    demo = document["demo"]
    journaled = sum(demo["journaled"].values())
    assert set(demo["journaled"]) == {"tag-0101", "tag-0102", "lock-0201", "alarm-0202"}
    # s-02's badge revoked at the office reached the lock through the outbox, and the lock's
    # own event closed the command (then it denied the badge: a scripted step)
    assert demo["outbox"] == [["lock-0201", "revoke", "applied"]]
    assert journaled == demo["stored"] == demo["exported"] == document["counts"]["events"]
    assert not [i for i in document["integrity"] if i["rule"] in ("I1", "I2", "I3", "I4", "I5")]
    # every tap proof was checked and held: the phone's answers under its enrolled key, the
    # NTAG 424 SUNs under the organisation's keys with a counter rising from door to door
    assert not [i for i in document["integrity"] if i["rule"] == "E7"]
    assert not [n for n in document["not_checked"] if n["rule"] == "E7"]
    return document


def check_huddinge(out: Path) -> dict:
    document = check_evidence(out)
    assert document["profile"] == "huddinge"
    found = findings(document)
    # deviations scripted into the provider's claims
    assert found["k-02"]["S2"] == "reject"  # double staffing registered by both staff
    assert found["k-08"] == {"E1": "adjust"}  # claimed 15:00-16:10, evidence 15:00-15:45
    adjusted = [f for f in document["findings"] if f["claim_id"] == "k-08"][0]
    assert adjusted["payable_minutes"] == 45
    # manual claim, no evidence, no reason: follow_up naming the missing reason (RULES.md E5)
    assert found["k-09"] == {"E5": "follow_up"}
    assert found["k-12"] == {"E5": "follow_up", "T4": "reject"}  # not ordered, manual
    assert found["k-11"] == {"E1": "reject"}  # night alarm claimed as a home visit
    # claims the boards' evidence supports: the cohabitants (NTAG 424 back to back), the
    # visit declined at the door, the late visit, the visit across the network outage
    for claim_id in ("k-03", "k-04", "k-06", "k-07", "k-10"):
        assert claim_id not in found, (claim_id, found.get(claim_id))
    assert document["counts"]["manual_registrations"] == {"p-1": 2}
    return document


def test_demo_command_with_the_embedded_broker(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "kvitto", "demo", "--no-serve", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedded broker (amqtt)" in result.stdout
    assert f"report: {out / 'report.html'}" in result.stdout.replace("\n", "")
    document = check_huddinge(out)
    # the exported case bundle, verified offline, gives the municipality the same findings
    from kvitto.verify.check import verify_case

    offline = verify_case(out / "case", "huddinge", document["month"]).as_dict()
    assert offline["findings"] == document["findings"]
    assert offline["counts"]["events"] == document["counts"]["events"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "alarm-0202.svg", "lock-0201.svg", "tag-0101.svg", "tag-0102.svg",
    ]  # fmt: skip
    # what `kvitto demo` serves without --no-serve: the month in kvitto serve's store
    from kvitto.store.db import open_store
    from kvitto.web.demo import prepare_demo

    url, logins = prepare_demo(out, "p-1", "huddinge")
    assert [role for _, role, _ in logins] == ["coordinator", "auditor", "admin"]
    with open_store(url) as store:
        served = store.execute(
            "SELECT claim_id, rule, outcome FROM verdicts WHERE claim_id = 'k-08'"
        )
    assert ("k-08", "E1", "adjust") in served


def test_demo_against_a_real_mosquitto_under_upplands_bro(tmp_path, mosquitto):
    from rich.console import Console

    from kvitto.sim.demo import run_demo

    outcome = run_demo(
        Console(width=160, record=True),
        out=tmp_path / "out",
        broker=f"mqtt://{mosquitto.host}:{mosquitto.port}",
        profile="upplands-bro",
    )
    document = check_evidence(tmp_path / "out")
    assert outcome.stored == sum(outcome.journaled.values()) == document["counts"]["events"]
    found = findings(document)
    assert found["k-02"]["S1"] == "reject"  # double staffing the order does not grant
    assert found["k-10"] == {"T1": "reject"}  # 22:30 is night time
    assert found["k-11"]["A4"] == "reject"  # the 02:10 alarm belongs to the night patrol
    assert found["k-05"] == {"A2": "adjust"}  # 21 min alarm visit, standard time 15
    assert "A3" not in found.get("k-05", {})  # checked in 12 minutes after the call
    assert found["k-08"] == {"E1": "adjust"} and found["k-09"] == {"E1": "reject"}
    for claim_id in ("k-03", "k-04"):
        assert claim_id not in found, (claim_id, found.get(claim_id))


def test_demo_ends_serving_its_month_until_ctrl_c(tmp_path):
    """`kvitto demo` without --no-serve (the README's `make demo`): after the report it serves
    the demo's month, printing the URL and a login per role; the printed coordinator login
    sees the demo's deviation, the auditor's the overview; Ctrl-C stops it cleanly."""
    import queue
    import re
    import threading

    import httpx

    from conftest import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kvitto", "demo", "--out", str(tmp_path / "out"), "--port",
         str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],  # type: ignore[union-attr]
                     daemon=True).start()  # fmt: skip
    logins: dict[str, tuple[str, str]] = {}
    seen = []
    base = f"http://127.0.0.1:{port}"
    with server_process(process):
        while len(logins) < 3:
            line = lines.get(timeout=240)  # a guard against a hang, not a timed assertion
            seen.append(line)
            found = re.match(r"\s+(coordinator|auditor|admin)\s+(\S+)\s+password (\S+)$", line)
            if found:
                logins[found.group(1)] = (found.group(2), found.group(3))
        assert f"kvitto serve on the demo's month: http://127.0.0.1:{port}/\n" in seen
        assert (tmp_path / "out" / "report.html").exists()
        wait_listening(base)
        for role, page, expected in (("coordinator", "/avvikelser", "k-08"),
                                     ("auditor", "/uppfoljning", "p-1")):  # fmt: skip
            with httpx.Client(base_url=base, timeout=30) as client:
                assert http_login(client, *logins[role]).status_code == 303, role
                shown = client.get(page)
                assert shown.status_code == 200 and expected in shown.text, role

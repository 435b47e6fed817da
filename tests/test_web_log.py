"""kvitto serve's audit log (Logg): every login, correction, decision and export becomes a
record of its chain; auditors see their municipality's chains and admins every chain, a
coordinator none; the page checks the chain on every view and shows an edited record."""

from __future__ import annotations

import html
import re

import pytest
from web_support import MONTH, build_world, login, post

from kvitto.web import records as chain


@pytest.fixture
def world(tmp_path):
    return build_world(tmp_path)


def kinds(world, name: str) -> list[tuple[str, str, str]]:
    return [(r.kind, r.actor, str(r.body.get("what") or r.body.get("decision") or ""))
            for r in chain.records(world.store, chains=[name])]  # fmt: skip


def test_every_login_correction_decision_and_export_is_logged(world):
    coordinator = world.client()
    login(coordinator, "samordnare-p1")
    post(coordinator, "/avvikelser/k-1/ratta", {"reason_code": "annan-tid", "text": "",
                                                 "end": "2026-11-27 08:30"}, page="/avvikelser/k-1")  # fmt: skip
    for export in ("underlag.csv", "underlag.json", "arende.zip"):
        assert coordinator.get(f"/manad/{MONTH}/{export}").status_code == 200
    post(coordinator, "/logout", {}, page="/avvikelser")
    auditor = world.client()
    login(auditor, "uppfoljare-huddinge")
    post(auditor, "/besok/p-1/k-2/beslut", {"rule": "E5", "decision": "accept", "text": ""},
         page="/besok/p-1/k-2")  # fmt: skip
    assert auditor.get(f"/uppfoljning/p-1/{MONTH}/underlag.csv").status_code == 200
    assert kinds(world, "p-1") == [
        ("login", "samordnare-p1", ""),
        ("correct", "samordnare-p1", ""),
        ("export", "samordnare-p1", "billing.csv"),
        ("export", "samordnare-p1", "billing.json"),
        ("export", "samordnare-p1", "case"),
        ("logout", "samordnare-p1", ""),
        ("decide", "uppfoljare-huddinge", "accept"),
        ("export", "uppfoljare-huddinge", "billing.csv"),
    ]
    assert kinds(world, "m:huddinge") == [("login", "uppfoljare-huddinge", "")]
    assert chain.verify_chain(chain.records(world.store)) == []


def chains_shown(client) -> set[str]:
    page = client.get("/logg")
    assert page.status_code == 200
    return set(re.findall(r"<td>([a-z:\-0-9]+)</td><td class=\"num\">\d+</td>", page.text))


def test_the_log_is_for_auditors_and_admins_within_their_reach(world):
    for name in ("samordnare-p1", "samordnare-p3", "uppfoljare-norrtalje"):
        login(world.client(), name)
    coordinator = world.client()
    login(coordinator, "samordnare-p1")
    assert coordinator.get("/logg").status_code == 404
    huddinge = world.client()
    login(huddinge, "uppfoljare-huddinge")
    assert chains_shown(huddinge) == {"p-1", "m:huddinge"}  # not p-3 or Norrtälje's
    norrtalje = world.client()
    login(norrtalje, "uppfoljare-norrtalje")
    assert chains_shown(norrtalje) == {"p-3", "m:norrtalje"}
    admin = world.client()
    login(admin, "admin")
    assert chains_shown(admin) == {"p-1", "p-3", "m:huddinge", "m:norrtalje", "admin"}


def test_the_log_page_shows_an_edited_record(world):
    auditor = world.client()
    login(auditor, "uppfoljare-huddinge")
    coordinator = world.client()
    login(coordinator, "samordnare-p1")
    post(coordinator, "/avvikelser/k-2/forklara", {"reason_code": "teknikfel", "text": ""},
         page="/avvikelser/k-2")  # fmt: skip
    page = html.unescape(auditor.get("/logg").text)
    assert 'id="chain-ok"' in page and "Loggkedjan är inte hel" not in page
    world.store.execute(
        "UPDATE records SET actor = 'någon-annan' WHERE chain = 'p-1' AND kind = 'explain'"
    )
    page = html.unescape(auditor.get("/logg").text)
    assert 'id="chain-ok"' not in page
    assert 'role="alert"' in page and "Loggkedjan är inte hel" in page
    assert "p-1 #2: hash does not match its content" in page

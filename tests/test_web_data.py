"""kvitto serve's data layer on SQLite and PostgreSQL: the scope isolates providers, a
correction is a record on top of the claim that the rules judge at once, and the records form
a hash chain that shows any edit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from collect_support import fresh_database, postgres_cluster
from web_support import MONTH, NOW, build_world

from kvitto.verify.reasons import said
from kvitto.web import records as chain
from kvitto.web.accounts import get_user
from kvitto.web.scope import Scope
from kvitto.web.visibility import NotFound, Refused


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path):
    if request.param == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres"), f"web_{abs(hash(tmp_path))}")
        return build_world(tmp_path, url)
    return build_world(tmp_path)


def scope_of(world, name: str) -> Scope:
    user = get_user(world.store, name)
    assert user is not None
    return Scope(world.store, user, NOW)


def rules_of(scope: Scope, provider: str, claim_id: str) -> dict[str, str]:
    return {r.rule: r.outcome for r in scope.findings(provider, MONTH) if r.claim_id == claim_id}


def test_a_coordinator_sees_only_its_provider(world):
    p1 = scope_of(world, "samordnare-p1")
    assert p1.providers == ["p-1"]
    rows, total = p1.queue()
    assert total == len(rows) > 0
    assert {r.provider for r in rows} == {"p-1"}
    for foreign, ids in {"p-2": "k-201", "p-3": "k-301"}.items():
        with pytest.raises(NotFound):
            p1.claim(foreign, ids)
        with pytest.raises(NotFound):
            p1.findings(foreign, MONTH)
        with pytest.raises(NotFound):
            p1.billing(foreign, MONTH)
    with pytest.raises(NotFound):
        p1.claim("p-1", "k-201")  # p-2's claim id under the coordinator's own provider
    with pytest.raises(NotFound):
        p1.evidence("c-2001", NOW.replace(day=1), NOW)
    with pytest.raises(NotFound):
        p1.explain("k-201", "teknikfel", "")


def test_an_auditor_sees_its_municipality_and_an_admin_no_claims(world):
    auditor = scope_of(world, "uppfoljare-huddinge")
    assert auditor.providers == ["p-1", "p-2"]
    assert auditor.claim("p-2", "k-201")[1].customer == "c-2001"
    with pytest.raises(NotFound):
        auditor.claim("p-3", "k-301")  # Norrtälje's provider
    with pytest.raises(NotFound):
        auditor.explain("k-1", "teknikfel", "")  # auditors do not correct claims
    admin = scope_of(world, "admin")
    with pytest.raises(NotFound):
        admin.claim("p-1", "k-1")


def test_a_correction_is_a_record_judged_at_once(world):
    p1 = scope_of(world, "samordnare-p1")
    assert rules_of(p1, "p-1", "k-1") == {"E1": "adjust", "D4": "reject"}
    before = world.store.execute(
        "SELECT fields FROM claims WHERE provider = 'p-1' AND claim_id = 'k-1'"
    )
    record = p1.correct("k-1", "annan-tid", "lämnade 08:30", {"end": "2026-11-27 08:30"})
    assert record.body["before"] == {"end": "2026-11-27T08:50"}
    assert record.body["after"] == {"end": "2026-11-27T08:30+01:00"}
    # the imported claim is unchanged; the rules see the correction (E1 holds now) at its time
    assert (
        world.store.execute(
            "SELECT fields FROM claims WHERE provider = 'p-1' AND claim_id = 'k-1'"
        )
        == before
    )
    assert rules_of(p1, "p-1", "k-1") == {"D4": "reject"}
    month, claim, _ = p1.claim("p-1", "k-1")
    assert claim.adjusted_at == NOW and claim.minutes == 30
    # attesting approves the month's claims at the attestation's time: D4 holds
    p1.attest(MONTH)
    assert rules_of(p1, "p-1", "k-1") == {}


def test_explain_withdraw_and_register(world):
    p2 = scope_of(world, "samordnare-p2")
    # a manual claim without evidence and without a reason: followed up, "reason missing" (E5)
    finding = [r for r in p2.findings("p-2", MONTH) if r.claim_id == "k-201" and r.rule == "E5"]
    assert finding[0].outcome == "follow_up" and "reason missing" in said(finding[0].reason, "en")
    p2.explain("k-201", "teknikfel", "taggen var trasig")
    finding = [r for r in p2.findings("p-2", MONTH) if r.claim_id == "k-201" and r.rule == "E5"]
    assert finding[0].outcome == "follow_up" and "'teknikfel'" in said(finding[0].reason, "en")
    p2.withdraw("k-201", "dubbelregistrering", "")
    assert rules_of(p2, "p-2", "k-201") == {}
    with pytest.raises(NotFound):
        p2.claim("p-2", "k-201")
    record = p2.register("c-2001", "omsorg", "2026-11-29 09:00", "2026-11-29 09:20", "s-20",
                         "glomt-registrera", "")  # fmt: skip
    month, claim, _ = p2.claim("p-2", record.claim_id)
    assert (claim.registered_via, claim.registered_at, claim.minutes) == ("manual", NOW, 20)
    # after-the-fact with a reason: followed up (E5); not approved yet (D4)
    assert rules_of(p2, "p-2", record.claim_id) == {"E5": "follow_up", "D4": "reject"}


def test_refusals_name_the_problem(world):
    p1 = scope_of(world, "samordnare-p1")
    with pytest.raises(Refused, match="personnummer"):
        p1.explain("k-1", "teknikfel", "gällde 19121212-1212")
    with pytest.raises(Refused, match="reason_code"):
        p1.explain("k-1", "påhittad", "")
    with pytest.raises(Refused, match="no_change"):
        p1.correct("k-1", "annan-tid", "", {"end": "2026-11-27T08:50"})
    with pytest.raises(Refused, match="end"):
        p1.correct("k-1", "annan-tid", "", {"end": "i morgon"})
    assert chain.records(world.store, kinds=chain.CLAIM_KINDS) == []


def test_an_auditor_decides_a_follow_up(world):
    auditor = scope_of(world, "uppfoljare-huddinge")
    assert rules_of(auditor, "p-1", "k-2")["E5"] == "follow_up"
    with pytest.raises(Refused, match="reason_missing"):
        auditor.decide("p-1", "k-2", "E5", "reject", "")
    with pytest.raises(NotFound):
        auditor.decide("p-1", "k-2", "E1", "accept", "")  # no E1 follow-up on k-2
    auditor.decide("p-1", "k-2", "E5", "reject", "ingen felanmälan finns")
    decided = [r for r in auditor.findings("p-1", MONTH) if r.claim_id == "k-2" and r.rule == "E5"]
    assert decided[0].outcome == "reject" and decided[0].decision["decision"] == "reject"


def test_the_records_are_a_hash_chain(world):
    p1 = scope_of(world, "samordnare-p1")
    p1.explain("k-2", "teknikfel", "")
    p1.correct("k-1", "annan-tid", "", {"end": "2026-11-27 08:30"})
    p1.attest(MONTH)
    every = chain.records(world.store, chains=["p-1"])
    assert [r.seq for r in every] == [1, 2, 3]
    assert every[0].prev == chain.ZERO and every[1].prev == every[0].hash
    assert chain.verify_chain(every) == []
    # an edit of any record's content, or a removed record, shows
    world.store.execute(
        "UPDATE records SET body = ? WHERE chain = 'p-1' AND seq = 2",
        ('{"after": {"end": "2026-11-27T08:45"}, "before": {}, "reason_code": "annan-tid"}',),
    )
    assert chain.verify_chain(chain.records(world.store, chains=["p-1"])) == [
        "p-1 #2: hash does not match its content"
    ]
    world.store.execute("DELETE FROM records WHERE chain = 'p-1' AND seq = 1")
    assert chain.verify_chain(chain.records(world.store, chains=["p-1"]))[0].startswith(
        "p-1: record 1 missing"
    )


def test_every_page_string_has_an_english_translation():
    import re
    from pathlib import Path

    from kvitto.web.i18n import catalogue

    english = catalogue("en")
    web = Path(__file__).parent.parent / "host" / "kvitto" / "web"
    # the templates' texts and those the web package's modules pass to gettext, with arguments
    # after them or not: a new text without an English entry shows Swedish to an English user
    said = re.compile(r"""\b_\((["'])(.*?)\1\s*[),]""")
    missing, found = [], 0
    for source in [*sorted((web / "templates").glob("*.html")), *sorted(web.glob("*.py"))]:
        for match in said.finditer(source.read_text()):
            found += 1
            if english.gettext(match.group(2)) == match.group(2) and match.group(2) not in (
                "Start", "Export", "Hash", "Live"):  # fmt: skip
                missing.append(f"{source.name}: {match.group(2)}")
    assert found > 200  # the pattern still finds the app's texts
    assert missing == []

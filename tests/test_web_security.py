"""kvitto serve's protections, each a test that fails without it: provider isolation on every
route, CSRF on every state change, a new session id at login, login throttling, the idle
timeout, refusal of personal identity numbers, cookie flags and security headers."""

from __future__ import annotations

import re

import pytest
from web_support import FOREIGN, MONTH, PASSWORD, build_world, csrf_of, login, post

from kvitto.store.registry import Registry
from kvitto.web import accounts
from kvitto.web.app import CSRF_COOKIE, SESSION_COOKIE
from kvitto.web.pages import routes
from kvitto.web.personnummer import find_personnummer

# A phone credential of each provider (docs/phone.md), for the phone routes.
PHONES = {"p-1": "a1" * 16, "p-2": "a2" * 16, "p-3": "a3" * 16}


@pytest.fixture
def world(tmp_path):
    built = build_world(tmp_path)
    registry = Registry(built.store)
    for provider, credential in PHONES.items():
        registry.add_credential(credential, f"s-9{provider[-1]}", provider, "phone")
    return built


# Every route a coordinator can reach, with a placeholder for each id kind it takes.
COORDINATOR_ROUTES = [
    ("GET", "/avvikelser/{claim}"),
    ("POST", "/avvikelser/{claim}/forklara"),
    ("POST", "/avvikelser/{claim}/ratta"),
    ("POST", "/avvikelser/{claim}/aterkalla"),
    ("GET", "/besok/{provider}/{claim}"),
    ("POST", "/besok/{provider}/{claim}/beslut"),
    ("GET", "/uppfoljning/{provider}/{month}"),
    ("GET", "/uppfoljning/{provider}/{month}/underlag.csv"),
    ("GET", "/uppfoljning/{provider}/{month}/underlag.json"),
    ("GET", "/uppfoljning/{provider}/{month}/arende.zip"),
]


# Coordinator routes that take a foreign id in the form rather than the path: the customer of
# an after-the-fact registration and of a lock's one-off window; and a phone credential.
FORM_ROUTES = [
    ("/manad/{month}/efterregistrera", {"customer": "{customer}", "activity": "omsorg",
                                        "start": "2026-11-29 09:00", "end": "2026-11-29 09:20",
                                        "staff": "s-07", "reason_code": "glomt-registrera"}),
    ("/dag/lasfonster", {"customer": "{customer}", "start": "10:30", "minutes": "60"}),
]  # fmt: skip
CREDENTIAL_ROUTES = ["/telefoner/{credential}/sparra"]
# The door's public routes take a token or a door, not a provider's id: the link or the passkey
# authenticates them (tests/test_door.py refuses a foreign or stale one).
PUBLIC = {"/telefon/{token}", "/t/{door}", "/t/s/{door}"}


def test_the_isolation_list_covers_every_route_with_an_id():
    from kvitto.web.door import routes as door_routes

    with_ids = {r.path for r in [*routes(), *door_routes()]
                if "{" in r.path and "{lang}" not in r.path}  # fmt: skip
    listed = {re.sub(r"\{(claim|provider|month)\}", lambda m: "{" + {
        "claim": "claim_id", "provider": "provider", "month": "month"}[m.group(1)] + "}", path)
        for _, path in COORDINATOR_ROUTES}  # fmt: skip
    listed |= {path for path, _ in FORM_ROUTES} | set(CREDENTIAL_ROUTES)
    # month pages of the coordinator's own provider take no provider id: a month is not foreign
    own_month = {"/manad/{month}", "/manad/{month}/attestera", "/manad/{month}/efterregistrera",
                 "/manad/{month}/underlag.{kind}", "/manad/{month}/arende.zip"}  # fmt: skip
    assert with_ids - own_month - listed - PUBLIC == {
        "/uppfoljning/{provider}/{month}/underlag.{kind}"
    }


def test_a_coordinator_gets_404_for_every_foreign_id(world):
    client = world.client()
    login(client, "samordnare-p1")
    token = csrf_of(client.get("/avvikelser").text)
    tried = leaks = 0
    for provider, ids in FOREIGN.items():
        for method, template in COORDINATOR_ROUTES:
            path = template.format(provider=provider, claim=ids["claim"], month=ids["month"])
            if method == "GET":
                answer = client.get(path)
            else:
                answer = client.post(path, data={"csrftoken": token, "reason_code": "teknikfel",
                                                 "text": "x", "rule": "E1",
                                                 "decision": "accept"})  # fmt: skip
            tried += 1
            if answer.status_code != 404 or ids["customer"] in answer.text:
                leaks += 1
        # the coordinator's own provider with a foreign claim id: not found either
        for method, template in COORDINATOR_ROUTES[:5]:
            path = template.format(provider="p-1", claim=ids["claim"], month=MONTH)
            answer = client.get(path) if method == "GET" else client.post(
                path, data={"csrftoken": token, "reason_code": "teknikfel"})  # fmt: skip
            tried += 1
            leaks += answer.status_code != 404
        # a foreign customer in the form: not found, and nothing stored or queued
        for template, form in FORM_ROUTES:
            path = template.format(month=MONTH)
            data = {k: v.format(customer=ids["customer"]) for k, v in form.items()}
            answer = client.post(path, data={**data, "csrftoken": token})
            tried += 1
            leaks += answer.status_code != 404
        # another provider's phone: not found, and not revoked
        for template in CREDENTIAL_ROUTES:
            answer = client.post(template.format(credential=PHONES[provider]),
                                 data={"csrftoken": token})  # fmt: skip
            tried += 1
            leaks += answer.status_code != 404
    per_provider = len(COORDINATOR_ROUTES) + 5 + len(FORM_ROUTES) + len(CREDENTIAL_ROUTES)
    assert tried == 2 * per_provider
    assert leaks == 0
    assert world.store.execute("SELECT COUNT(*) FROM records WHERE kind <> 'login'")[0][0] == 0
    assert world.store.outbox() == []
    for provider in FOREIGN:
        phone = Registry(world.store).credential(PHONES[provider])
        assert phone is not None and not phone.revoked
    # and the coordinator's own ids answer: the 404s above are isolation, not broken routes
    assert client.get("/avvikelser/k-1").status_code == 200
    assert client.get("/besok/p-1/k-1").status_code == 200
    for template, form in FORM_ROUTES:
        data = {k: v.format(customer="c-1001") for k, v in form.items()}
        answer = client.post(template.format(month=MONTH), data={**data, "csrftoken": token})
        assert answer.status_code == 303, template  # found (c-1001 has no lock: refused)
    for template in CREDENTIAL_ROUTES:
        answer = client.post(template.format(credential=PHONES["p-1"]), data={"csrftoken": token})
        assert answer.status_code == 303, template


def test_an_auditor_gets_404_for_another_municipality(world):
    client = world.client()
    login(client, "uppfoljare-huddinge")
    assert client.get("/besok/p-2/k-201").status_code == 200
    for path in (
        "/besok/p-3/k-301",
        f"/uppfoljning/p-3/{MONTH}",
        f"/uppfoljning/p-3/{MONTH}/underlag.csv",
    ):
        assert client.get(path).status_code == 404, path
    assert client.get("/avvikelser").status_code == 404  # a coordinator's page


def test_every_state_change_needs_the_csrf_token(world):
    client = world.client()
    login(client, "samordnare-p1")
    data = {"reason_code": "teknikfel", "text": "", "end": "2026-11-27 08:30"}
    assert client.post("/avvikelser/k-1/ratta", data=data).status_code == 403
    assert (
        client.post("/avvikelser/k-1/ratta", data={**data, "csrftoken": "forged"}).status_code
        == 403
    )
    assert client.post(f"/manad/{MONTH}/attestera", data={}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert world.store.execute("SELECT COUNT(*) FROM records WHERE kind <> 'login'")[0][0] == 0
    # a login without the token is refused too (login CSRF), even with no cookie at all
    fresh = world.client()
    answer = fresh.post("/login", data={"name": "samordnare-p1", "password": PASSWORD})
    assert answer.status_code == 403
    # with the token from the form, the same correction goes through
    assert post(client, "/avvikelser/k-1/ratta", data, page="/avvikelser/k-1").status_code == 303


def test_login_issues_a_new_session_id(world):
    client = world.client()
    login(client, "samordnare-p2")
    planted = client.cookies.get(SESSION_COOKIE)
    assert planted
    # the attacker's session cookie is planted in the victim's browser; the victim logs in
    login(client, "samordnare-p1")
    fresh = client.cookies.get(SESSION_COOKIE)
    assert fresh and fresh != planted
    assert "samordnare-p1" in client.get("/avvikelser").text
    # the planted cookie is not the victim's session, and its own session ended at the login
    attacker = world.client()
    attacker.cookies.set(SESSION_COOKIE, planted)
    answer = attacker.get("/avvikelser")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_logout_and_idle_timeout_end_the_session(world):
    client = world.client()
    login(client, "samordnare-p1")
    cookie = client.cookies.get(SESSION_COOKIE)
    post(client, "/logout", {}, page="/avvikelser")
    replay = world.client()
    replay.cookies.set(SESSION_COOKIE, cookie)
    assert replay.get("/avvikelser").status_code == 303
    session_id = "idle-test"
    user = accounts.get_user(world.store, "samordnare-p1")
    assert user is not None
    issued = accounts.start_session(world.store, user, 0)
    assert accounts.session_user(world.store, issued, accounts.IDLE_TIMEOUT_MS - 1) == user
    assert accounts.session_user(world.store, issued, 2 * accounts.IDLE_TIMEOUT_MS) is None
    assert accounts.session_user(world.store, session_id, 0) is None


def test_login_is_throttled_per_name(world):
    client = world.client()
    for _ in range(accounts.MAX_FAILURES):
        assert login(client, "samordnare-p1", "fel-lösenord-fel").status_code == 401
    answer = login(client, "samordnare-p1")  # the right password, while locked
    assert answer.status_code == 429
    assert "15 minuter" in answer.text
    assert login(world.client(), "samordnare-p2").status_code == 303  # other names unaffected


def test_login_and_the_door_are_rate_limited_per_address(world):
    """A guessing script from one address is slowed before CSRF, session or store see it: the
    login POST and the door's public routes answer 429 with Retry-After past their limit (small
    limits here), while another address and the logged-in pages go on."""
    import warnings

    from kvitto.web.throttle import Limits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = world.app(limits=Limits(login="3/minute", public="5/minute"))
    one = TestClient(app, follow_redirects=False, client=("192.0.2.10", 40000))
    other = TestClient(app, follow_redirects=False, client=("192.0.2.20", 40000))
    answers = [login(one, "samordnare-p1", "fel-lösenord-fel").status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    refused = login(one, "samordnare-p1")  # the right password too: the address is slowed
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "För många försök" in refused.text and 'lang="sv"' in refused.text
    assert "content-security-policy" in refused.headers  # the security headers still wrap it
    assert one.get("/login").status_code == 200  # the form itself is not limited
    assert login(other, "samordnare-p2").status_code == 303
    doors = [one.get("/t/nothing-here").status_code for _ in range(6)]
    assert 429 not in doors[:5] and doors[5] == 429  # an unknown door: refused, then slowed
    assert other.get("/t/nothing-here").status_code == doors[0]
    assert other.get("/borta").status_code != 429


def test_a_personal_identity_number_is_refused(world):
    client = world.client()
    login(client, "samordnare-p1")
    answer = post(client, "/avvikelser/k-1/forklara",
                  {"reason_code": "teknikfel", "text": "brukare 19121212-1212 var sjuk"},
                  page="/avvikelser/k-1")  # fmt: skip
    assert answer.status_code == 400
    assert "personnummer" in answer.text
    assert world.store.execute("SELECT COUNT(*) FROM records WHERE kind = 'explain'")[0][0] == 0
    assert "19121212" not in str(world.store.execute("SELECT body FROM records"))


@pytest.mark.parametrize(
    "text",
    ["19121212-1212", "191212121212", "121212-1212", "1212121212", "20121212+1212 x",
     "kund 811228-9874.", "samordningsnr 701063-2391"],
)  # fmt: skip
def test_personal_identity_numbers_are_found(text):
    assert find_personnummer(text)


@pytest.mark.parametrize(
    "text", ["121212-1213", "08:00-08:30", "2026-11-27", "tel 0701234567", "1234567890123"]
)
def test_other_numbers_are_not_personal_identity_numbers(text):
    assert find_personnummer(text) is None


def test_cookies_and_headers(world):
    client = world.client(secure=True)
    page = client.get("/login")
    headers = page.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"].startswith("max-age=")
    assert "<script>" not in page.text and " on" + "click=" not in page.text
    answer = client.post("/login", data={"name": "samordnare-p1", "password": PASSWORD,
                                         "csrftoken": csrf_of(page.text)})  # fmt: skip
    cookies = answer.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
    assert "httponly" in session.lower() and "samesite=strict" in session.lower()
    assert "secure" in session.lower()
    csrf = next(c for c in page.headers.get_list("set-cookie") if c.startswith(CSRF_COOKIE))
    assert "SameSite=Strict" in csrf and "Secure" in csrf


def test_each_role_reaches_only_its_pages(world):
    """coordinator, auditor, admin: each page answers its roles and is not found for others
    (the same 404 as a page that does not exist)."""
    pages = {
        "/dag": {"coordinator"},
        "/avvikelser": {"coordinator"},
        "/avvikelser/k-1": {"coordinator"},
        f"/manad/{MONTH}": {"coordinator"},
        f"/manad/{MONTH}/underlag.csv": {"coordinator"},
        "/telefoner": {"coordinator"},
        "/uppfoljning": {"auditor"},
        f"/uppfoljning/p-1/{MONTH}": {"auditor"},
        f"/uppfoljning/p-1/{MONTH}/arende.zip": {"coordinator", "auditor"},  # its own: p-1
        "/besok/p-1/k-1": {"coordinator", "auditor"},
        "/logg": {"auditor", "admin"},
        "/admin": {"admin"},
        "/enheter": {"coordinator", "admin"},  # a coordinator: its customers' devices (#22)
    }
    for name, role in (("samordnare-p1", "coordinator"), ("uppfoljare-huddinge", "auditor"),
                       ("admin", "admin")):  # fmt: skip
        client = world.client()
        login(client, name)
        answers = {path: client.get(path).status_code for path in pages}
        assert answers == {path: 200 if role in roles else 404
                           for path, roles in pages.items()}, name  # fmt: skip
    admin = world.client()
    login(admin, "admin")
    page = admin.get("/admin").text
    assert all(name in page for name in ("samordnare-p1", "uppfoljare-norrtalje", "p-3"))
    # without a session every page sends the browser to the login
    anonymous = world.client()
    assert {anonymous.get(path).status_code for path in pages} == {303}


PNR = "19121212-1212"


def test_every_free_text_field_refuses_a_personal_identity_number(world):
    """Each form's free text (and the pseudonyms typed by hand) refuses a personal identity
    number with the message, and stores nothing; the lock window's text: test_web_locks."""
    coordinator, auditor = world.client(), world.client()
    login(coordinator, "samordnare-p1")
    login(auditor, "uppfoljare-huddinge")
    register = {"customer": "c-1003", "activity": "omsorg", "start": "2026-11-29 09:00",
                "end": "2026-11-29 09:20", "staff": "s-07", "reason_code": "glomt-registrera",
                "text": ""}  # fmt: skip
    forms = [
        (coordinator, "/avvikelser/k-1/forklara", {"reason_code": "teknikfel"}, "text",
         "/avvikelser/k-1"),
        (coordinator, "/avvikelser/k-1/ratta", {"reason_code": "annan-tid",
                                                "end": "2026-11-27 08:30"}, "text",
         "/avvikelser/k-1"),
        (coordinator, "/avvikelser/k-1/aterkalla", {"reason_code": "dubbelregistrering"}, "text",
         "/avvikelser/k-1"),
        (coordinator, f"/manad/{MONTH}/attestera", {}, "text", f"/manad/{MONTH}"),
        (coordinator, f"/manad/{MONTH}/efterregistrera", register, "text", f"/manad/{MONTH}"),
        (coordinator, f"/manad/{MONTH}/efterregistrera", register, "staff", f"/manad/{MONTH}"),
        (coordinator, "/telefoner/lank", {}, "staff", "/telefoner"),
        (auditor, "/besok/p-1/k-2/beslut", {"rule": "E5", "decision": "reject"}, "text",
         "/besok/p-1/k-2"),
    ]  # fmt: skip
    for client, path, form, field, page in forms:
        answer = post(client, path, {**form, field: f"gäller {PNR}"}, page=page)
        if answer.status_code == 303:  # refused by a redirect to the form with the reason
            assert "fel=" in answer.headers["location"], (path, field)
            answer = client.get(answer.headers["location"])
        else:
            assert answer.status_code == 400, (path, field)
        assert "personnummer" in answer.text, (path, field)
    assert world.store.execute("SELECT COUNT(*) FROM records WHERE kind <> 'login'")[0][0] == 0
    assert world.store.execute("SELECT COUNT(*) FROM enrolments")[0][0] == 0
    for table, column in (("records", "body"), ("claims", "fields")):
        stored = world.store.execute(f"SELECT {column} FROM {table}")
        assert not any("19121212" in str(row[0]) for row in stored), table

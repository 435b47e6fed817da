"""A small municipality for the web tests: three providers' months loaded into a store, users,
a fixed clock, and the app on it.

    world = build_world(tmp_path, "sqlite:///…")     # providers p-1, p-2 (Huddinge), p-3 (Norrtälje)
    client = world.client()                          # Starlette's TestClient on create_app
    login(client, "samordnare-p1")

November 2026, judged on Monday 30 November 10:00 (Stockholm): the approval deadline (D4, the
first weekday of December at 15:00) is a day ahead, so claims are not approved yet. p-1's
deviations: k-1 claimed 08:00–08:50 with evidence 08:00–08:30 (E1 adjust), k-2 registered
manually with a reason (E5 follow_up). Today c-1001 has a planned 09:00 visit nobody arrived at
and c-1003's alarm at 08:00 has no check-in.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from verify_support import Bundle

from kvitto.store.db import Store, open_store
from kvitto.web.accounts import add_user
from kvitto.web.judge import judge
from kvitto.web.load import load_case
from kvitto.web.plan import import_plan

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=ZoneInfo("Europe/Stockholm"))
MONTH = "2026-11"
PASSWORD = "korrekt-hast-batteri-klammer"
USERS = {
    "samordnare-p1": ("coordinator", "p-1", ""),
    "samordnare-p2": ("coordinator", "p-2", ""),
    "samordnare-p3": ("coordinator", "p-3", ""),
    "uppfoljare-huddinge": ("auditor", "", "huddinge"),
    "uppfoljare-norrtalje": ("auditor", "", "norrtalje"),
    "admin": ("admin", "", ""),
}
# Every id of p-2 and p-3 a p-1 coordinator must never reach.
FOREIGN = {
    "p-2": {"claim": "k-201", "customer": "c-2001", "month": MONTH},
    "p-3": {"claim": "k-301", "customer": "c-3001", "month": MONTH},
}


def _p1(root: Path) -> Bundle:
    b = Bundle(root, start_boot_at="2026-11-01T06:00")
    b.customer("c-1001")
    b.customer("c-1002")
    b.customer("c-1003")
    b.device("tag-1001", "c-1001")
    b.device("tag-1002", "c-1002")
    b.device("alarm-1003", "c-1003", role="alarm")
    b.credential("s-07", provider="p-1")
    b.credential("s-08", provider="p-1")
    for customer in ("c-1001", "c-1002", "c-1003"):
        b.order(customer, "omsorg")
    b.visit("tag-1001", "s-07", "2026-11-27T08:00", "2026-11-27T08:30")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-11-27T08:00", "2026-11-27T08:50",
            approved_at="")  # fmt: skip
    b.visit("tag-1002", "s-08", "2026-11-27T10:00", "2026-11-27T10:30")
    b.claim("k-2", "c-1002", "s-08", "omsorg", "2026-11-27T10:00", "2026-11-27T10:30",
            registered_via="manual", reason="teknikfel", approved_at="")  # fmt: skip
    b.visit("tag-1002", "s-08", "2026-11-28T10:00", "2026-11-28T10:30")
    b.claim("k-3", "c-1002", "s-08", "omsorg", "2026-11-28T10:00", "2026-11-28T10:30",
            approved_at="")  # fmt: skip
    # today: an alarm at c-1003 at 08:00 that nobody checked in to; s-07 at c-1002 at 07:30
    b.event("alarm-1003", "alarm_call", "2026-11-30T08:00", None, {"alarm": 1})
    b.visit("tag-1002", "s-08", "2026-11-30T07:30", "2026-11-30T07:55")
    b.write()
    return b


def _single(root: Path, provider: str, customer: str, device: str, staff: str, claim: str,
            activity: str) -> Path:  # fmt: skip
    b = Bundle(root, start_boot_at="2026-11-01T06:00")
    b.customer(customer)
    b.device(device, customer)
    b.credential(staff, provider=provider)
    b.order(customer, activity)
    b.claim(claim, customer, staff, activity, "2026-11-26T09:00", "2026-11-26T09:30",
            registered_via="manual", approved_at="")  # fmt: skip
    return b.write()


@dataclass
class World:
    store: Store
    url: str
    root: Path
    p1: Bundle  # p-1's devices, to sign more events while a page is open

    def arrive(self, device: str, staff: str, at: str) -> None:
        """A new signed arrival, stored as the collector would (kvitto.collect.ingest)."""
        from kvitto.collect.intake import ingest

        message = self.p1.event(device, "arrive", at, staff, {"via": "badge"})
        path = self.root / f"live-{len(self.p1.messages)}.cbor-seq"
        path.write_bytes(message)
        ingest(self.store, path)

    def app(self, **options):  # noqa: ANN201 (an ASGI app)
        from kvitto.web.app import create_app

        return create_app(self.store, secret=b"test-secret-test-secret-test-se", clock=lambda: NOW,
                          **options)  # fmt: skip

    def client(self, **options):  # noqa: ANN201 (a TestClient)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Starlette 1.x would rather have httpx2
            from starlette.testclient import TestClient

            base = "https://testserver" if options.get("secure") else "http://testserver"
            return TestClient(self.app(**options), base_url=base, follow_redirects=False)


def build_world(root: Path, url: str | None = None) -> World:
    url = url or f"sqlite:///{root / 'kvitto.db'}"
    store = open_store(url)
    now_ms = int(NOW.timestamp() * 1000)
    p1 = _p1(root / "p-1")
    load_case(store, p1.root, provider="p-1", municipality="huddinge", now_ms=now_ms)
    load_case(store, _single(root / "p-2", "p-2", "c-2001", "tag-2001", "s-20", "k-201", "omsorg"),
              provider="p-2", municipality="huddinge", now_ms=now_ms)  # fmt: skip
    load_case(store, _single(root / "p-3", "p-3", "c-3001", "tag-3001", "s-30", "k-301", "226"),
              provider="p-3", municipality="norrtalje", now_ms=now_ms)  # fmt: skip
    plan = root / "plan.csv"
    plan.write_text(
        "customer,start,end,activities\n"
        "c-1001,2026-11-30T09:00,2026-11-30T09:30,omsorg\n"
        "c-1002,2026-11-30T07:30,2026-11-30T08:00,omsorg\n"
    )
    import_plan(store, "p-1", plan, now_ms)
    for provider in ("p-1", "p-2", "p-3"):
        judge(store, provider, MONTH, now_ms)
    for name, (role, provider, municipality) in USERS.items():
        add_user(store, name, role, PASSWORD, provider=provider, municipality=municipality)
    return World(store, url, root, p1)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def login(client, name: str, password: str = PASSWORD):  # noqa: ANN001, ANN201
    page = client.get("/login")
    return client.post(
        "/login", data={"name": name, "password": password, "csrftoken": csrf_of(page.text)}
    )


def post(client, path: str, data: dict[str, str], page: str | None = None):  # noqa: ANN001, ANN201
    """POST a form the way the browser does: with the CSRF token of the page it came from."""
    html = client.get(page or path.rsplit("/", 1)[0]).text
    return client.post(path, data={**data, "csrftoken": csrf_of(html)})


# -- `kvitto serve` (or `kvitto demo`) as a separate process, as a user runs it -----------------


def wait_listening(base: str) -> None:
    """Until the server at `base` answers (it listens just after it prints its URL)."""
    import httpx

    for _ in range(600):  # a guard against a hang, not a timed assertion
        try:
            httpx.get(f"{base}/login", timeout=5)
            return
        except httpx.TransportError:
            threading.Event().wait(0.1)


@contextmanager
def server_process(process: subprocess.Popen[str]) -> Iterator[None]:
    """Run the block with the server `process` up; then Ctrl-C, which must stop it cleanly
    (exit 0, no traceback). Killed whatever happens, so a failing test leaves no server."""
    try:
        yield
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == 0
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def http_login(client, name: str, password: str):
    """Log in through the login form (its CSRF token) with an httpx client; the answer."""
    token = re.search(r'name="csrftoken" value="([^"]+)"', client.get("/login").text)
    assert token
    return client.post(
        "/login", data={"name": name, "password": password, "csrftoken": token.group(1)}
    )

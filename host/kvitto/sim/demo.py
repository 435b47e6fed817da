"""`kvitto demo`: a day of home care on virtual boards, end to end, in one command.

    from kvitto.sim.demo import run_demo
    outcome = run_demo(out=Path("kvitto-demo"))      # broker=None: the embedded amqtt broker
    print(outcome.report_html, outcome.result.counts)

What runs is the real system: four virtual boards (the firmware under the unix port) are
provisioned over their serial ptys the way an installer does it (kvitto.install.provision, mpremote's
raw REPL), staff credentials are enrolled in a temporary registry, the boards publish signed
events through a network proxy to an MQTT broker, the real Collector stores them, and
kvitto.verify.check checks a provider's claims for the month against that evidence.

A scripted day happens in seconds of wall time, so its times come from the scenario: before
each step the board's clock is set to the scripted moment with the organisation's signed
`time` command (FORMATS.md §2) over MQTT, exactly as an operator would; the board journals a
`clock_sync`, and the host re-anchors the boot's events on it (RULES.md I5). The day is in the
previous month, so device times are never ahead of the collector's receipt. Every finding in
the report comes from verify on the collected evidence; nothing here is precomputed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kvitto.errors import KvittoError
from kvitto.sim.scene import (
    BADGE_A,
    BADGE_B,
    BOARDS,
    NTAG_C,
    PHONE_SEED,
    PROVIDER,
    STEP_TIMEOUT,
    Day,
    DemoOutcome,
    Progress,
    _claims,
    _revoke_at_the_office,
    _write_claims,
    _write_orders,
    _zone,
    activities,
    embedded_broker,
    order_rows,
)


def _previous_month_day(today: dt.date) -> dt.date:
    """A Wednesday in the middle of the previous month: in the past, never on a holiday."""
    first = today.replace(day=1)
    previous = (first - dt.timedelta(days=1)).replace(day=10)
    while previous.weekday() != 2:
        previous += dt.timedelta(days=1)
    return previous


def run_demo(
    console: Console | None = None,
    *,
    out: Path | str = "kvitto-demo",
    broker: str | None = None,
    profile: str = "huddinge",
    keep: bool = False,
) -> DemoOutcome:
    console = console or Console()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = Progress(console)
    started = time.monotonic()
    if keep:
        workdir = out / "work"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="kvitto-demo-"))
    try:
        with contextlib.ExitStack() as stack:
            if broker is None:
                broker = stack.enter_context(embedded_broker(workdir))
                say(f"embedded broker (amqtt) on {broker}")
            else:
                say(f"broker {broker}")
            outcome = _run(console, say, out, workdir, broker, profile, stack)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    _summary(console, outcome)
    return outcome


def _run(console: Console, say: Progress, out: Path, workdir: Path, broker: str, profile: str,
         stack: contextlib.ExitStack) -> DemoOutcome:  # fmt: skip
    from urllib.parse import urlparse

    from kvitto.collect.collector import Collector
    from kvitto.install.enroll import enroll_badge, enroll_ntag424, enroll_phone, ntag424_masters
    from kvitto.install.pki import ensure_org
    from kvitto.install.provision import Provisioning, provision
    from kvitto.sim.board import VirtualBoard
    from kvitto.sim.fleet import NtagBadges
    from kvitto.store.db import open_store
    from kvitto.store.keys import load_command_key
    from kvitto.store.registry import Order, Registry
    from kvitto.verify.check import verify_store
    from kvitto.verify.export import export_case
    from kvitto.verify.report import render
    from kvitto.verify.rules import load_profile

    loaded_profile = load_profile(profile)  # an unknown profile fails before any board starts
    url = urlparse(broker)
    broker_host, broker_port = url.hostname or "127.0.0.1", url.port or 1883
    pki = workdir / "pki"
    org = ensure_org(pki)
    org_secret = load_command_key(pki)
    store_url = f"sqlite:///{workdir / 'kvitto.db'}"
    store = open_store(store_url)
    stack.callback(store.close)
    registry = Registry(store)
    say(f"registry and store: {store_url}; organisation key and credential salt in {pki}")

    # Boards fresh from `kvitto flash`: no config, console open; provisioned over their pty.
    boards: dict[str, VirtualBoard] = {}
    for device, role, _, _ in BOARDS:
        board = VirtualBoard(
            workdir / device, device, role, broker=(broker_host, broker_port), provision=False
        )
        stack.callback(board.stop)
        board.start()
        boards[device] = board
    for board in boards.values():
        board.wait_ready(60, app=False)
    for device, role, customer, household in BOARDS:
        board = boards[device]
        host, port = board.broker_address() or (broker_host, broker_port)
        result = provision(
            Provisioning(
                port=board.serial_port, device=device, customer=customer, role=role,
                board="sim", store_url=store_url, pki_dir=pki, broker_host=host,
                broker_port=port, household=household, ntp=[], label_dir=out / "labels",
                reset=False,
            )
        )  # fmt: skip
        # The unix port has no machine.reset(): the installer's reset button, as in
        # tests/test_provision.py. ntp=[]: the scripted day sets every clock by command.
        board.reset()
        mark = f" (label {result.mark})" if result.mark else ""
        say(f"provisioned {device} ({role}) for {customer}{mark} over {board.serial_port}")
    for board in boards.values():
        board.wait_ready(60)

    # Staff: two badges, an NTAG 424 badge, a provider-owned phone.
    salt = org.credential_salt
    staff = {}
    staff["s-01"] = enroll_badge(registry, salt, BADGE_A, "s-01", PROVIDER)
    staff["s-02"] = enroll_badge(registry, salt, BADGE_B, "s-02", PROVIDER)
    staff["s-03"] = enroll_ntag424(registry, salt, ntag424_masters(pki), NTAG_C, "s-03", PROVIDER)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    phone_public = Ed25519PrivateKey.from_private_bytes(PHONE_SEED).public_key().public_bytes_raw()
    staff["s-04"] = enroll_phone(registry, salt, phone_public.hex(), "s-04", PROVIDER)
    # the simulated phone holds its app key: its answers to the doors' challenges are real
    phone_raw = PHONE_SEED.hex()
    say("enrolled s-01, s-02 (badges), s-03 (NTAG 424), s-04 (phone)")

    today = dt.datetime.now(_zone()).date()
    day = _previous_month_day(today)
    month = f"{day:%Y-%m}"
    codes = activities(loaded_profile)
    for customer, code, minutes, double in order_rows(codes):
        registry.add_order(Order(customer, code, minutes, f"{day.replace(day=1)}", "", double, 0))

    scene = Day(boards, store, org_secret, broker, day, say)
    scene.badges = NtagBadges(ntag424_masters(pki))
    stack.callback(scene.close)
    at = scene.moment
    # The lock opens for s-01 and s-02 (signed `allow`, FORMATS.md §2), sent before the
    # collector runs so none of its acks can take a higher command sequence first; the
    # `time` after it is obeyed in order, so its clock_sync shows the allowlist is set.
    creds = [bytes.fromhex(staff[s].credential_id) for s in ("s-01", "s-02")]
    scene.command("lock-0201", "allow", {"creds": creds})
    scene.clock("lock-0201", at("01:00"))
    say("lock-0201 allowlist: s-01, s-02 (signed `allow`)")

    collector = Collector(store, broker, org_secret, client_id="kvitto_demo_collector")
    collector.start()
    stack.callback(collector.stop)
    collector.wait_ready(20)
    say(f"collector subscribed; the scripted day is {day:%A %Y-%m-%d}")

    # 02:10 night alarm at c-2001, answered by s-02
    scene.press("alarm-0202", at("02:10"), "alarm_call", ("alarm_call",))
    scene.press("alarm-0202", at("02:31"), "green", ("alarm_checkin",))
    scene.press("alarm-0202", at("02:48"), "yellow", ("alarm_checkout",))
    # 07:30-08:15 double staffing at the lock: s-01 unlocks, s-02 arrives while it is open
    scene.tap("lock-0201", at("07:30"), "badge", BADGE_A, "s-01", ("unlock",))
    scene.act("lock-0201", at("07:31"), "door opens", lambda b: b.door(True), ("door_open",))
    scene.tap("lock-0201", at("07:32"), "badge", BADGE_B, "s-02", ("arrive",))
    scene.act("lock-0201", at("07:33"), "door closes", lambda b: b.door(False), ("door_close",))
    # 08:15 both tap out (depart, no strike); the exit button lets them out
    scene.tap("lock-0201", at("08:15"), "badge", BADGE_A, "s-01", ("depart",))
    scene.tap("lock-0201", at("08:15"), "badge", BADGE_B, "s-02", ("depart",))
    scene.press("lock-0201", at("08:16"), "exit", ("unlock",))
    scene.act("lock-0201", at("08:16"), "door opens", lambda b: b.door(True), ("door_open",))
    scene.act("lock-0201", at("08:16"), "door closes", lambda b: b.door(False), ("door_close",))
    # 09:00-09:40 and 09:40-10:05 s-03 at the two cohabitants (alternative 2: back to back)
    scene.tap("tag-0101", at("09:00"), "ntag424", NTAG_C, "s-03", ("arrive",))
    scene.tap("tag-0101", at("09:40"), "ntag424", NTAG_C, "s-03", ("depart",))
    scene.tap("tag-0102", at("09:40"), "ntag424", NTAG_C, "s-03", ("arrive",))
    scene.tap("tag-0102", at("10:05"), "ntag424", NTAG_C, "s-03", ("depart",))
    # 11:02 alarm call, s-04 checks in 12 minutes later, out at 11:35
    scene.press("alarm-0202", at("11:02"), "alarm_call", ("alarm_call",))
    scene.press("alarm-0202", at("11:14"), "green", ("alarm_checkin",))
    scene.press("alarm-0202", at("11:35"), "yellow", ("alarm_checkout",))
    # 12:00 declined at the door at c-1001: s-01 arrives and leaves a minute later
    scene.tap("tag-0101", at("12:00"), "badge", BADGE_A, "s-01", ("arrive",))
    scene.tap("tag-0101", at("12:01"), "badge", BADGE_A, "s-01", ("depart",))
    # 13:00 power cut during s-04's visit at c-1002 (phone); power back at 13:20
    scene.tap("tag-0102", at("13:00"), "phone", phone_raw, "s-04", ("arrive",))
    boards["tag-0102"].power_cut()
    say("13:05 tag-0102   power cut")
    boards["tag-0102"].power_restore()
    boards["tag-0102"].wait_ready(60)
    say("13:20 tag-0102   power back (boot 2: clock unset until the next `time`)")
    event = scene.tap("tag-0102", at("13:30"), "phone", phone_raw, "s-04", ("depart", "arrive"))
    if event["type"] == "arrive":
        say("               the open visit did not survive the power cut: a new arrival")
    # 15:00 network outage at c-1001: the arrival is journaled, delivered after the restore
    scene.clock("tag-0101", at("15:00"))
    boards["tag-0101"].network_cut()
    say("15:00 tag-0101   network cut")
    after = scene.last_seq("tag-0101")
    boards["tag-0101"].tap("badge", BADGE_B)
    scene.wait_for("tag-0101", after, ("arrive",), STEP_TIMEOUT)
    scene.last_tap[("tag-0101", BADGE_B)] = time.monotonic()
    say("15:00 tag-0101   s-02 taps (badge) → arrive, journaled, not delivered")
    boards["tag-0101"].network_restore()
    say("15:10 tag-0101   network back")
    scene.tap("tag-0101", at("15:45"), "badge", BADGE_B, "s-02", ("depart",))
    # 22:30 late visit at c-1002 by s-02
    scene.tap("tag-0102", at("22:30"), "badge", BADGE_B, "s-02", ("arrive",))
    scene.tap("tag-0102", at("22:50"), "badge", BADGE_B, "s-02", ("depart",))
    # 23:00 s-02 leaves the provider and the office revokes the badge. The lock keeps its
    # allowlist on flash, so the `revoke` waits in the store's outbox until the collector has
    # sent it and the lock's own signed health event shows it done (kvitto.store.outbox).
    scene.clock("lock-0201", at("23:00"))
    _revoke_at_the_office(store, staff["s-02"].credential_id, say)
    scene.tap("lock-0201", at("23:10"), "badge", BADGE_B, "s-02", ("deny",))

    # Everything journaled is collected: wait until the store holds each board's journal.
    journaled = {device: scene.last_seq(device) for device in boards}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(store.event_count(d) >= n for d, n in journaled.items()):
            break
        time.sleep(0.2)
    stored = {d: store.event_count(d) for d in boards}
    say(f"collected {sum(stored.values())} of {sum(journaled.values())} journaled events")
    if stored != journaled:
        raise KvittoError(f"the collector stored {stored}, the boards journaled {journaled}")

    # The provider's claims for the day, some deviating.
    claims_path = out / "claims.csv"
    orders_path = out / "orders.csv"
    _write_orders(orders_path, day, codes)
    claims = _claims(scene, codes)
    _write_claims(claims_path, claims)
    case_dir = out / "case"
    shutil.rmtree(case_dir, ignore_errors=True)
    exported = export_case(store, month, case_dir, provider=PROVIDER, claims=claims_path,
                           orders=orders_path)  # fmt: skip
    say(f"exported the case bundle: {case_dir} ({exported.events} events)")
    # the organisation's keys check the NTAG 424 SUNs (the phone's key is in the registry)
    result = verify_store(store_url, claims_path, loaded_profile, month, orders_path, pki)
    say(f"verified {len(claims)} claims under profile {profile} for {month}")
    document = result.as_dict()
    document["demo"] = {"journaled": journaled, "stored": sum(stored.values()),
                        "exported": exported.events, "day": f"{day}",
                        "outbox": [(r.device, r.type, r.state) for r in store.outbox()]}  # fmt: skip
    report_json = out / "report.json"
    report_json.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    report_html = out / "report.html"
    report_html.write_text(render(result, "html"), encoding="utf-8")
    return DemoOutcome(
        out=out, report_html=report_html, report_json=report_json, case_dir=case_dir,
        month=month, result=result, journaled=journaled, stored=sum(stored.values()),
        exported=exported.events, seconds=0.0,
    )  # fmt: skip


def _summary(console: Console, outcome: DemoOutcome) -> None:
    result = outcome.result
    claims = {c.claim_id: c for c in result.claims}
    table = Table(title=f"kvitto demo · {result.profile} · {result.month}")
    wide = console.width >= 140
    columns = ["claim", "cust.", "staff", "activity", "claimed", "rule", "outcome", "min"]
    for column in columns + (["reason"] if wide else []):
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    colours = {"reject": "red", "adjust": "yellow", "follow_up": "cyan"}
    for claim_id, claim in claims.items():
        findings = result.findings_for(claim_id)
        span = f"{claim.local_start:%H:%M}-{claim.local_end:%H:%M}"
        base = [claim_id, claim.customer, claim.staff, claim.activity, span]
        if not findings:
            table.add_row(*base, "", "[green]payable[/]", str(claim.minutes), *[""][: int(wide)])
        for finding in findings:
            outcome_text = f"[{colours.get(finding.outcome, 'white')}]{finding.outcome}[/]"
            reason = [finding.text("en")] if wide else []
            table.add_row(*base, finding.rule, outcome_text, str(finding.payable_minutes),
                          *reason)  # fmt: skip
            base = ["", "", "", "", ""]
    console.print(table)
    integrity = Table(title="evidence")
    integrity.add_column("what")
    integrity.add_column("count", justify="right")
    integrity.add_row("events journaled by the boards", str(sum(outcome.journaled.values())))
    integrity.add_row("events stored by the collector", str(outcome.stored))
    integrity.add_row("events in the case bundle", str(outcome.exported))
    integrity.add_row("events verified", str(result.counts.get("events", 0)))
    integrity.add_row("open visits", str(result.counts.get("open_visits", 0)))
    for issue in result.integrity:
        integrity.add_row(
            f"{issue['rule']} {issue['device']}#{issue['seq']}: {issue['reason']}", ""
        )
    console.print(integrity)
    console.print(f"report: {outcome.report_html}  (JSON: {outcome.report_json})")
    console.print(f"case bundle: {outcome.case_dir}  ·  {outcome.seconds:.0f} s")

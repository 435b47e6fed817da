"""The day board's digital locks (issue #23): a lock's signed denial outside the visit windows
is flagged for the coordinator, and the coordinator's button grants a one-off window — a
signed `window` command queued in the outbox for the customer's lock, and a record in the
provider's chain. Refusals name the reason; another provider's customer is not found."""

from __future__ import annotations

import html

from web_support import build_world, login, post

from kvitto.collect.intake import ingest
from kvitto.store.registry import Registry
from kvitto.web import records as chain


def with_lock(tmp_path):
    world = build_world(tmp_path)
    first = len(world.p1.messages)
    world.p1.device("lock-1001", "c-1001", role="lock")
    key = world.p1.devices["lock-1001"]["key"].public_key().public_bytes_raw()
    Registry(world.store).add_device("lock-1001", "c-1001", "lock", key)
    world.p1.event("lock-1001", "deny", "2026-11-30T06:10", "s-07",
                   {"via": "badge", "reason": "outside_window", "fallback": "deny"})  # fmt: skip
    world.p1.event("lock-1001", "deny", "2026-11-30T06:20", "s-07",
                   {"via": "badge", "reason": "unknown", "fallback": "deny"})  # fmt: skip
    path = tmp_path / "lock.cbor-seq"
    path.write_bytes(b"".join(world.p1.messages[first:]))
    ingest(world.store, path)
    return world


def test_denial_outside_a_window_is_flagged_and_the_button_grants_one(tmp_path):
    world = with_lock(tmp_path)
    client = world.client()
    login(client, "samordnare-p1")
    board = client.get("/dag").text
    assert board.count("Låset nekade personal utanför besökstid") == 1  # not the unknown badge
    assert "06:10" in board
    assert board.count('action="/dag/lasfonster"') == 1  # c-1001 has a lock; c-1002 has none
    # the plan's activities and the events by name, as a coordinator reads them
    assert "09:00–09:30 Omsorg" in html.unescape(board) and " omsorg" not in board
    assert "06:10 nekad s-07" in html.unescape(board)

    answer = post(client, "/dag/lasfonster",
                  {"customer": "c-1001", "start": "10:30", "minutes": "60", "text": "extra"},
                  page="/dag")  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/dag?oppnat=c-1001"
    [command] = world.store.outbox()
    assert (command.device, command.type) == ("lock-1001", "window")
    assert command.x["end"] - command.x["start"] == 3600
    record = chain.records(world.store, chains=["p-1"])[-1]
    assert (record.kind, record.actor, record.customer) == (
        "lock_window", "samordnare-p1", "c-1001")  # fmt: skip
    assert (
        record.body["commands"] == [command.id]
        and record.body["start"] == "2026-11-30T10:30+01:00"
    )
    assert "Ett engångsfönster är skickat" in client.get(answer.headers["location"]).text


def test_grants_refused_with_a_reason_or_not_found(tmp_path):
    world = with_lock(tmp_path)
    client = world.client()
    login(client, "samordnare-p1")
    for form, code in (
        ({"customer": "c-1001", "start": "08:00", "minutes": "60"}, "past"),  # now is 10:00
        ({"customer": "c-1001", "start": "10:30", "minutes": "7"}, "minutes"),
        ({"customer": "c-1001", "start": "halv elva", "minutes": "60"}, "time"),
        ({"customer": "c-1001", "start": "10:30", "minutes": "60", "text": "19121212-1212"},
         "pnr"),
        ({"customer": "c-1002", "start": "10:30", "minutes": "60"}, "nolock"),
    ):  # fmt: skip
        answer = post(client, "/dag/lasfonster", form, page="/dag")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith(f"/dag?fel={code}&"), answer.headers
    assert "Kunden har inget digitalt lås." in client.get("/dag?fel=nolock").text
    foreign = post(client, "/dag/lasfonster",
                   {"customer": "c-2001", "start": "10:30", "minutes": "60"}, page="/dag")  # fmt: skip
    assert foreign.status_code == 404
    assert world.store.outbox() == []

"""kvitto serve's Enheter page and /metrics (issue #22): the fleet as `kvitto fleet` sees it
(kvitto.fleet.status), for the administrator, and for a Prometheus scraper with its token."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_support import NOW, build_world, login

from kvitto.fleet.status import ALERTS, fleet_status

TOKEN = "scrape-token-0123456789"


@pytest.fixture
def world(tmp_path):
    return build_world(tmp_path)


def test_the_admin_sees_every_device_with_its_alerts(world):
    client = world.client()
    login(client, "admin")
    page = client.get("/enheter")
    assert page.status_code == 200
    rows = fleet_status(world.store, int(NOW.timestamp() * 1000))
    for status in rows:
        assert f'id="device-{status.device}"' in page.text
    assert {"tag-2001", "tag-3001"} <= {status.device for status in rows}
    alerting = sum(1 for status in rows if status.alerts)
    assert f"{len(rows)} enheter, {alerting} med larm." in page.text
    english = client.get("/sprak/en", headers={"referer": "/enheter"})
    assert english.status_code in (200, 303)
    assert "Last seen" in client.get("/enheter").text


def test_every_alert_is_explained_in_swedish_and_in_english(world):
    """The alerts column and its legend use words, not codes: every alert kvitto fleet can raise
    (door held open and tamper included) is named and explained, Swedish first."""
    from kvitto.fleet.status import ALERTS

    client = world.client()
    login(client, "admin")
    swedish = client.get("/enheter").text
    for code in ALERTS:
        assert f'id="alert-{code}"' in swedish, code
    assert "dörr öppen</dt>" in swedish and "sabotage</dt>" in swedish
    client.get("/sprak/en", headers={"referer": "/enheter"})
    english = client.get("/enheter").text
    assert "door open</dt>" in english and "tamper</dt>" in english
    assert "dörren har stått" not in english


def test_a_coordinator_sees_the_devices_at_its_providers_customers_only(world):
    """Issue #22: the Enheter page is for admins and for coordinators of that provider."""
    from kvitto.store.registry import Registry

    registry = Registry(world.store)
    served = {d.id: set(d.served) for d in registry.devices() if not d.revoked}
    for coordinator, provider in (("samordnare-p1", "p-1"), ("samordnare-p2", "p-2")):
        customers = {str(row[0]) for row in world.store.execute(
            "SELECT customer FROM customer_providers WHERE provider = ?", (provider,))}  # fmt: skip
        own = {device for device, at in served.items() if at & customers}
        client = world.client()
        login(client, coordinator)
        page = client.get("/enheter")
        assert page.status_code == 200
        assert 'href="/enheter"' in client.get("/avvikelser").text  # in the coordinator's menu
        shown = {device for device in served if f'id="device-{device}"' in page.text}
        assert own and shown == own, (coordinator, shown, own)
        assert f"{len(own)} enheter," in page.text


def test_other_roles_do_not_get_the_devices_page(world):
    client = world.client()
    login(client, "uppfoljare-huddinge")
    assert client.get("/enheter").status_code == 404


def test_metrics_need_the_scrapers_token(world, monkeypatch):
    client = world.client()
    assert client.get("/metrics").status_code == 404  # no token configured: no such page
    monkeypatch.setenv("KVITTO_METRICS_TOKEN", TOKEN)
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 404
    answer = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = [
        (sample.labels.get("device"), sample.labels.get("alert"), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "kvitto_device_alert"
    ]
    expected = [
        (d.device, alert, 1.0 if alert in d.alerts else 0.0)
        for d in fleet_status(world.store, int(NOW.timestamp() * 1000))
        for alert in ALERTS
    ]
    assert sorted(samples) == sorted(expected)  # kvitto fleet's view, at the app's clock
    assert {device for device, _, _ in samples} >= {"tag-2001", "tag-3001"}

"""The fleet at a glance: one line per device from its signed `health` reports (issue #22),
with the alerts a person on call acts on, as text, JSON or a Prometheus exposition.

    devices = fleet_status(store, now_ms=intake_now(), current="0.2.0")
    print(render(devices, "prometheus"))
    sys.exit(1 if any(d.alerts for d in devices) else 0)      # `kvitto fleet`

A health report is a `health` event whose x has `fw` (docs/formats-v1-additions.md); its
fields are the device's own, signed, as the collector stored them. Alerts are computed from
the newest report and the newest event of any kind, so an alert clears by itself when a later
report no longer shows it. `fleet_status` is the function the web app's devices page and
`/metrics` call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kvitto.errors import KvittoError
from kvitto.evidence.cose import split_sign1
from kvitto.evidence.events import decode_payload
from kvitto.store.db import Store
from kvitto.store.registry import Registry

DEFAULT_EVERY_S = 900  # the device's default health_s, for a device that never reported
SILENT_INTERVALS = 2  # silent for more than this many report intervals: alert
BACKLOG_LIMIT = 100  # unsent events in the device's journal above this: alert
CLOCK_LIMIT_S = 86400  # no clock sync for more than a day: alert
READER_FAILED = "failed"
ALERTS = ("silent", "reader", "backlog", "clock", "version", "door", "tamper")
_LOOK_BACK = 200  # health events read back per device to find its newest report


@dataclass
class DeviceStatus:
    """One device as the fleet view shows it. Times are Unix seconds (collector clock)."""

    device: str
    customer: str
    role: str
    last_seen: int | None = None
    version: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    report_seq: int | None = None
    report_at: int | None = None
    report_up_s: int | None = None
    update: str = ""  # the newest update step the device journaled: "valid 0.2.0", "refused hash"
    door_held_s: int | None = None  # a lock's door reported held open and not closed since
    tampered: bool = False  # the newest signed `tamper` event says open (issue #23)
    alerts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_version(text: str) -> tuple[int, ...]:
    """ "1.2.3" -> (1, 2, 3); KvittoError for anything else (a release names a plain version)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(part.isdigit() for part in parts):
        raise KvittoError(f"version {text!r}: write it as numbers with dots, e.g. 0.2.0")
    return tuple(int(part) for part in parts)


def _newest(store: Store, device: str) -> tuple[tuple[int, int, int, dict[str, Any]] | None, str]:
    """((seq, received_at ms, up ms, x) of the device's newest health report, or None; its
    newest update step: `ota` and `fw`/`refused`/`reason`, e.g. "rolled-back 0.2.0")."""
    rows = store.execute(
        "SELECT seq, received_at, message FROM events WHERE device = ? AND type = 'health' "
        "ORDER BY seq DESC LIMIT ?",
        (device, _LOOK_BACK),
    )
    report, update = None, ""
    for seq, received_at, message in rows:
        payload = split_sign1(bytes(message))[2]
        event = decode_payload(payload)  # verified when it was stored (kvitto.collect.intake)
        x = event.x
        if "ota" in x and not update:
            detail = x.get("reason") or x.get("refused") or x.get("fw") or ""
            update = f"{x['ota']} {detail}".strip()
        elif "ota" not in x and "fw" in x and report is None:
            report = int(seq), int(received_at), event.up, x
        if report is not None and update:
            break
    return report, update


def alerts_of(status: DeviceStatus, now: int, current: tuple[int, ...] | None,
              backlog_limit: int = BACKLOG_LIMIT) -> list[str]:  # fmt: skip
    """The alerts (ALERTS, in that order) the device raises at `now` (Unix seconds)."""
    report = status.report
    every = report.get("every_s", DEFAULT_EVERY_S)
    raised = []
    if status.last_seen is None or now - status.last_seen > SILENT_INTERVALS * every:
        raised.append("silent")
    if report.get("reader") == READER_FAILED:
        raised.append("reader")
    if report.get("backlog", 0) > backlog_limit:
        raised.append("backlog")
    if report:
        since_report = max(0, now - (status.report_at or now))
        sync = report.get("sync_s")
        # never synced in this boot: the clock has been unsynced for the whole uptime
        unsynced = (sync if sync is not None else (status.report_up_s or 0)) + since_report
        if unsynced > CLOCK_LIMIT_S:
            raised.append("clock")
    if current is not None and status.version is not None:
        try:
            behind = parse_version(status.version) < current
        except KvittoError:
            behind = True  # a version the release scheme does not know is not the release
        if behind:
            raised.append("version")
    if status.door_held_s is not None:
        raised.append("door")
    if status.tampered:
        raised.append("tamper")
    return raised


def _tampered(store: Store, device: str) -> bool:
    """Whether the device's newest `tamper` event says its housing is open (issue #23)."""
    rows = store.execute(
        "SELECT message FROM events WHERE device = ? AND type = 'tamper' ORDER BY seq DESC LIMIT 1",
        (device,),
    )
    if not rows:
        return False
    x = decode_payload(split_sign1(bytes(rows[0][0]))[2]).x
    return bool(x and x.get("open"))


def _door_held(store: Store, device: str) -> int | None:
    """held_s of a lock's newest door event if it is a held-open report (issue #23): the door
    was left open and has not closed since; None otherwise."""
    rows = store.execute(
        "SELECT message FROM events WHERE device = ? AND type IN ('door_open', 'door_close') "
        "ORDER BY seq DESC LIMIT 1",
        (device,),
    )
    if not rows:
        return None
    x = decode_payload(split_sign1(bytes(rows[0][0]))[2]).x
    return x.get("held_s") if x else None


def fleet_status(store: Store, now_ms: int, current: str | None = None,
                 backlog_limit: int = BACKLOG_LIMIT) -> list[DeviceStatus]:  # fmt: skip
    """Every registered, unrevoked device with its newest report and alerts. `current`: the
    current release; None takes the newest version any device reports (a device behind it is
    left behind by a rollout)."""
    seen = {
        str(device): int(last)
        for device, last in store.execute(
            "SELECT device, MAX(received_at) FROM events GROUP BY device"
        )
    }
    devices = []
    for device in Registry(store).devices():
        if device.revoked:
            continue
        status = DeviceStatus(device.id, device.customer, device.role)
        if device.id in seen:
            status.last_seen = seen[device.id] // 1000
        newest, status.update = _newest(store, device.id)
        if device.role == "lock":
            status.door_held_s = _door_held(store, device.id)
        status.tampered = _tampered(store, device.id)
        if newest is not None:
            seq, received_at, up_ms, x = newest
            status.report, status.report_seq = x, seq
            status.report_at, status.report_up_s = received_at // 1000, up_ms // 1000
            status.version = str(x["fw"])
        devices.append(status)
    release = parse_version(current) if current else _newest_version(devices)
    for status in devices:
        status.alerts = alerts_of(status, now_ms // 1000, release, backlog_limit)
    return devices


def _newest_version(devices: list[DeviceStatus]) -> tuple[int, ...] | None:
    versions = []
    for status in devices:
        try:
            versions.append(parse_version(status.version or ""))
        except KvittoError:
            continue
    return max(versions) if versions else None


def versions(devices: list[DeviceStatus]) -> dict[str, int]:
    """How many devices run each version: a staged rollout's progress."""
    counts: dict[str, int] = {}
    for status in devices:
        key = status.version or "unknown"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def render(devices: list[DeviceStatus], output_format: str, now_ms: int) -> str:
    if output_format == "json":
        document = {"devices": [d.as_dict() for d in devices], "versions": versions(devices)}
        return json.dumps(document, indent=2, sort_keys=True)
    if output_format == "prometheus":
        return prometheus(devices, now_ms)
    return text(devices, now_ms)


def _ago(now: int, then: int | None) -> str:
    if then is None:
        return "never"
    seconds = max(0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def text(devices: list[DeviceStatus], now_ms: int) -> str:
    now = now_ms // 1000
    rows = [("device", "customer", "role", "last seen", "version", "update", "alerts")]
    for d in devices:
        alerts = ", ".join(d.alerts) if d.alerts else "ok"
        rows.append((d.device, d.customer, d.role, _ago(now, d.last_seen), d.version or "-",
                     d.update or "-", alerts))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]  # fmt: skip
    counts = ", ".join(f"{version}: {count}" for version, count in versions(devices).items())
    alerting = sum(1 for d in devices if d.alerts)
    lines.append(f"{len(devices)} devices, {alerting} in alert; versions {counts or '-'}")
    return "\n".join(lines)


_GAUGES = (
    ("heap", "kvitto_device_heap_free_bytes", "Free heap at the last report"),
    ("heap_min", "kvitto_device_heap_min_free_bytes", "Least free heap seen in this boot"),
    ("backlog", "kvitto_device_journal_backlog_events", "Journaled events not yet acknowledged"),
    ("fill", "kvitto_device_journal_fill_percent", "Journal fill"),
    ("resets", "kvitto_device_reader_recoveries", "PN532 resets in this boot"),
    ("sync_s", "kvitto_device_clock_sync_age_seconds", "Seconds since the last clock sync"),
    ("rssi", "kvitto_device_wifi_rssi_dbm", "Wi-Fi signal"),
    ("supply_mv", "kvitto_device_supply_millivolts", "Supply voltage"),
)


def prometheus(devices: list[DeviceStatus], now_ms: int) -> str:
    """The Prometheus text exposition (prometheus-client's own writer)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = ["device", "customer", "role"]
    seen = Gauge("kvitto_device_last_seen_timestamp_seconds", "Collector time of the newest "
                 "event", labels, registry=registry)  # fmt: skip
    info = Gauge("kvitto_device_info", "Firmware version the device reports",
                 [*labels, "version"], registry=registry)  # fmt: skip
    alert = Gauge("kvitto_device_alert", "1 while the alert is raised", [*labels, "alert"],
                  registry=registry)  # fmt: skip
    gauges = {key: Gauge(name, doc, labels, registry=registry) for key, name, doc in _GAUGES}
    for d in devices:
        names = (d.device, d.customer, d.role)
        if d.last_seen is not None:
            seen.labels(*names).set(d.last_seen)
        info.labels(*names, d.version or "unknown").set(1)
        for name in ALERTS:
            alert.labels(*names, name).set(1 if name in d.alerts else 0)
        for key, gauge in gauges.items():
            value = d.report.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                gauge.labels(*names).set(value)
    Gauge("kvitto_fleet_devices_in_alert", "Devices with at least one alert",
          registry=registry).set(sum(1 for d in devices if d.alerts))  # fmt: skip
    return generate_latest(registry).decode()


def run_fleet(store_url: str, output_format: str, current: str | None, backlog_limit: int,
              now_ms: int) -> bool:  # fmt: skip
    """`kvitto fleet`: print the fleet; True when any device is in alert (exit status 1)."""
    from kvitto.store.db import open_store

    with open_store(store_url) as store:
        devices = fleet_status(store, now_ms, current, backlog_limit)
    print(render(devices, output_format, now_ms))
    return any(d.alerts for d in devices)

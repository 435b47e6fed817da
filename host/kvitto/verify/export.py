"""A case bundle from the collector's store (FORMATS.md §3): `kvitto export-case`.

The registry's customers, devices and credentials, every event of each boot that touches the
month, and the provider's claims and orders copied unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvitto.errors import KvittoError
from kvitto.store.db import Store
from kvitto.store.registry import Registry

# -- the case bundle ----------------------------------------------------------------------


def _csv_customers(path: Path) -> set[str]:
    from kvitto.verify.case_csv import csv_dict_reader

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv_dict_reader(handle.read())
            if reader.fieldnames is None or "customer" not in reader.fieldnames:
                raise KvittoError(f"{path} line 1: no 'customer' column in the header")
            customers = set()
            for number, record in enumerate(reader, start=2):
                customer = (record.get("customer") or "").strip()
                if not customer:
                    raise KvittoError(f"{path} line {number}, field customer: empty")
                customers.add(customer)
            return customers
    except OSError as error:
        raise KvittoError(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise KvittoError(f"{path}: not UTF-8 text") from None


def month_window(month: str) -> tuple[int, int]:
    """Unix seconds [start, end) of a month in Europe/Stockholm."""
    import datetime as dt

    from kvitto.store.registry import LOCAL

    try:
        first = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=LOCAL)
    except ValueError:
        raise KvittoError(f"month {month!r}: expected YYYY-MM") from None
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return int(first.timestamp()), int(following.timestamp())


@dataclass
class CaseExport:
    out: str
    month: str
    customers: int
    devices: int
    credentials: int
    events: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_case(
    store: Store,
    month: str,
    out: Path,
    *,
    provider: str | None = None,
    claims: Path | None = None,
    orders: Path | None = None,
) -> CaseExport:
    """Write the case bundle of FORMATS.md §3 for one month.

    Customers are those named in claims.csv and orders.csv (all, if neither is given); devices
    are theirs; credentials are the provider's (all, if none is named). Evidence is every event
    of those devices from each boot that has an event within the month (±1 day, by device time
    or else receive time), so the verifier can re-anchor every boot's clock from its own sync
    events. claims.csv and orders.csv are checked as `kvitto verify` reads them (a bad time or
    date: CaseError with file, line and field) and copied unchanged.
    """
    import shutil

    from kvitto.verify.case_read import read_claims, read_orders

    if claims is not None:
        read_claims(claims)
    if orders is not None:
        read_orders(orders)
    registry = Registry(store)
    start, end = month_window(month)
    wanted: set[str] | None = None
    for path in (claims, orders):
        if path is not None:
            wanted = (wanted or set()) | _csv_customers(path)
    customers = [c for c in registry.customers() if wanted is None or c.id in wanted]
    if wanted is not None:
        missing = sorted(wanted - {c.id for c in customers})
        if missing:
            raise KvittoError(f"customers not in the registry: {', '.join(missing)}")
    names = {c.id for c in customers}
    devices = [d for d in registry.devices() if names.intersection(d.served)]
    credentials = registry.credentials(provider)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    # Written under a temporary name and renamed: a bundle is never seen half-written.
    partial = out / "evidence.cbor-seq.partial"
    with partial.open("wb") as handle:
        for device in devices:
            rows = store.execute(
                "SELECT e.message FROM events e WHERE e.device = ? AND e.boot IN ("
                " SELECT DISTINCT boot FROM events WHERE device = ? AND"
                " COALESCE(t, received_at / 1000) >= ? AND COALESCE(t, received_at / 1000) < ?)"
                " ORDER BY e.seq",
                (device.id, device.id, start - 86400, end + 86400),
            )
            for (message,) in rows:
                handle.write(bytes(message))
                count += 1
    partial.replace(out / "evidence.cbor-seq")
    (out / "registry.toml").write_text(registry.to_toml(customers, devices, credentials))
    for path, name in ((claims, "claims.csv"), (orders, "orders.csv")):
        if path is not None and path.resolve() != (out / name).resolve():
            shutil.copyfile(path, out / name)
    return CaseExport(str(out), month, len(customers), len(devices), len(credentials), count)

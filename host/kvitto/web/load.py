"""Load a case bundle (FORMATS.md §3) into a store for `kvitto serve`: the demo's month, a
municipality's copy of a provider's month, test data.

    report = load_case(store, Path("kvitto-demo/case"), provider="p-1", municipality="huddinge")
    judge(store, "p-1", report.months[0], now_ms)

Registry, orders and evidence go where the collector would have put them (kvitto.registry,
kvitto.collect.ingest: every signature checked again); the claims are imported as the
provider's (kvitto.web.claims); the bundle's customers are assigned to the provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from kvitto.collect.intake import ingest
from kvitto.store.db import Store
from kvitto.store.registry import Order, Registry
from kvitto.verify.case import CaseError
from kvitto.verify.case_csv import parse_orders
from kvitto.web.accounts import add_provider, assign_customers
from kvitto.web.claims import import_claims
from kvitto.web.judge import judged_months, provider_profile


@dataclass
class LoadReport:
    customers: int
    claims: int
    events: int
    months: list[str]


def load_case(
    store: Store, case_dir: Path, *, provider: str, municipality: str, now_ms: int = 0
) -> LoadReport:
    add_provider(store, provider, municipality)
    registry = Registry(store)
    _import_registry(registry, case_dir / "registry.toml")
    customers = [c.id for c in registry.customers()]
    orders_path = case_dir / "orders.csv"
    if orders_path.exists():
        for order in parse_orders(orders_path.read_text(encoding="utf-8-sig"), str(orders_path)):
            registry.add_order(
                Order(order.customer, order.activity, order.granted_minutes_month,
                      f"{order.valid_from}", _date(order.valid_to), int(order.double_staffing),
                      int(order.tag_exempt))
            )  # fmt: skip
    events = 0
    for name in ("evidence.cbor-seq", "evidence.jsonl"):
        if (case_dir / name).exists():
            events += ingest(store, case_dir / name).stored
    bundle_customers = _bundle_customers(case_dir / "registry.toml")
    assign_customers(store, provider, [c for c in customers if c in bundle_customers])
    claims = 0
    if (case_dir / "claims.csv").exists():
        claims = import_claims(
            store, provider, case_dir / "claims.csv", provider_profile(store, provider), now_ms
        )
    return LoadReport(len(bundle_customers), claims, events, judged_months(store, provider))


def _date(value: date | None) -> str:
    return f"{value}" if value else ""


def _bundle_customers(path: Path) -> set[str]:
    from kvitto.verify.case import parse_registry

    try:
        text = path.read_text()
    except OSError as error:
        raise CaseError(f"{path}: {error}") from None
    return set(parse_registry(text, str(path)).customers)


def _import_registry(registry: Registry, path: Path) -> None:
    if not path.exists():
        raise CaseError(f"{path}: no registry.toml in the case bundle")
    registry.import_toml(path)

"""Case bundles written (FORMATS.md §3): registry.toml, orders.csv and claims.csv in the form
`kvitto.verify.case_read` reads back, and the evidence as a CBOR sequence.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

from kvitto.store.registry import toml_string
from kvitto.verify.case import CLAIM_FIELDS, CREDENTIAL_KEYS, ORDER_FIELDS, Claim, Order, Registry


def _fmt_time(value: datetime | None) -> str:
    return value.isoformat(timespec="minutes") if value is not None else ""


def _fmt_date(value: date | None) -> str:
    return value.isoformat() if value is not None else ""


def format_registry(registry: Registry) -> str:
    out: list[str] = []
    for customer in registry.customers.values():
        out.append("[[customer]]")
        out.append(f"id = {toml_string(customer.id)}")
        if customer.household:
            out.append(f"household = {toml_string(customer.household)}")
        if customer.age_group:
            out.append(f"age_group = {toml_string(customer.age_group)}")
        out.append("")
    for device in registry.devices.values():
        if device.building:
            served = ", ".join(toml_string(c) for c in device.customers)
            bound = [f"building = {toml_string(device.building)}", f"customers = [{served}]"]
        else:
            bound = [f"customer = {toml_string(device.customer)}"]
        out += [
            "[[device]]",
            f"id = {toml_string(device.id)}",
            *bound,
            f"role = {toml_string(device.role)}",
            f'public_key = "{device.public_key.hex()}"',
            f'installed = "{_fmt_date(device.installed)}"',
            f'revoked = "{_fmt_date(device.revoked)}"',
            "",
        ]
    for credential in registry.credentials.values():
        out += [
            "[[credential]]",
            f'id = "{credential.id}"',
            f"staff = {toml_string(credential.staff)}",
            f"provider = {toml_string(credential.provider)}",
            f"kind = {toml_string(credential.kind)}",
            f'revoked = "{_fmt_date(credential.revoked)}"',
        ]
        for name in CREDENTIAL_KEYS:
            value = getattr(credential, name)
            if value:
                out.append(f'{name} = "{value.hex()}"')
        out.append("")
    return "\n".join(out)


def format_orders(orders: Iterable[Order]) -> str:
    """orders.csv; the optional `ended_at` column (RULES.md X5) only when an order has it."""
    orders = list(orders)
    ended = any(order.ended_at is not None for order in orders)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*ORDER_FIELDS, "ended_at"] if ended else ORDER_FIELDS)
    for order in orders:
        row = [
            order.customer, order.activity, order.granted_minutes_month,
            _fmt_date(order.valid_from), _fmt_date(order.valid_to),
            int(order.double_staffing), int(order.tag_exempt),
        ]  # fmt: skip
        writer.writerow([*row, _fmt_time(order.ended_at)] if ended else row)
    return buffer.getvalue()


def format_claims(claims: Iterable[Claim]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CLAIM_FIELDS)
    for claim in claims:
        writer.writerow(
            [
                claim.claim_id, claim.customer, claim.staff, claim.activity,
                _fmt_time(claim.start), _fmt_time(claim.end), claim.registered_via,
                _fmt_time(claim.registered_at), _fmt_time(claim.approved_at),
                _fmt_time(claim.adjusted_at), int(claim.double_staffing) or "",
                claim.count or "", claim.reason, _fmt_time(claim.planned_start),
                _fmt_time(claim.planned_end), _fmt_time(claim.notified_at), claim.proof,
            ]
        )  # fmt: skip
    return buffer.getvalue()


def write_case(
    path: Path,
    registry: Registry,
    orders: Iterable[Order],
    claims: Iterable[Claim],
    messages: Iterable[bytes],
    jsonl: bool = False,
) -> Path:
    """Write a bundle folder; evidence as a CBOR sequence (or JSONL of base64 when asked)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "registry.toml").write_text(format_registry(registry))
    (path / "orders.csv").write_text(format_orders(orders))
    (path / "claims.csv").write_text(format_claims(claims))
    if jsonl:
        lines = [base64.b64encode(m).decode() for m in messages]
        (path / "evidence.jsonl").write_text("".join(line + "\n" for line in lines))
    else:
        (path / "evidence.cbor-seq").write_bytes(b"".join(messages))
    return path

"""Reading a case bundle's folder (FORMATS.md §3): registry.toml, orders.csv, claims.csv and the
evidence file, each through its parser.

    case = read_case(Path("case/"))     # raises CaseError naming file, line and field
    claims = read_claims(Path("claims.csv")); orders = read_orders(Path("orders.csv"))

The types and registry.toml are kvitto.verify.case; the CSV readers kvitto.verify.case_csv;
kvitto.verify.case_write writes the same files.
"""

from __future__ import annotations

from pathlib import Path

from kvitto.evidence.cose import EvidenceError
from kvitto.verify.case import Case, CaseError, Claim, Order, parse_registry
from kvitto.verify.case_csv import parse_claims, parse_orders


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CaseError(f"{path}: missing from the case bundle") from None
    except UnicodeDecodeError as error:
        raise CaseError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_claims(path: Path) -> list[Claim]:
    """claims.csv on its own (kvitto export-case checks it before copying it into a bundle)."""
    return parse_claims(_read_text(path), str(path))


def read_orders(path: Path) -> list[Order]:
    return parse_orders(_read_text(path), str(path))


def read_case(path: Path) -> Case:
    """Read a case bundle folder; raises CaseError for anything unusable."""
    path = Path(path)
    if not path.is_dir():
        raise CaseError(f"{path}: not a case bundle folder")
    registry = parse_registry(_read_text(path / "registry.toml"), str(path / "registry.toml"))
    orders = parse_orders(_read_text(path / "orders.csv"), str(path / "orders.csv"))
    claims = parse_claims(_read_text(path / "claims.csv"), str(path / "claims.csv"))
    for order in orders:
        if order.customer not in registry.customers:
            raise CaseError(
                f"{path / 'orders.csv'} line {order.line}, field customer: "
                f"{order.customer!r} is not in registry.toml"
            )
    for claim in claims:
        if claim.customer not in registry.customers:
            raise CaseError(
                f"{path / 'claims.csv'} line {claim.line}, field customer: "
                f"{claim.customer!r} is not in registry.toml"
            )
    evidence = None
    for name in ("evidence.cbor-seq", "evidence.jsonl"):
        if (path / name).exists():
            evidence = path / name
            break
    if evidence is None:
        # Without it every claim would be judged as unproven: a missing file is an incomplete
        # bundle, not a month without events (that is an empty file).
        raise CaseError(
            f"{path / 'evidence.cbor-seq'}: missing from the case bundle (nor is there an "
            "evidence.jsonl); a case without events has an empty evidence file"
        )
    return Case(path=path, registry=registry, orders=orders, claims=claims, evidence_path=evidence)


def check_evidence_file(case: Case) -> int:
    """Walk the evidence file once; raises CaseError (with item/line) if it is not readable."""
    count = 0
    try:
        for _ in case.messages():
            count += 1
    except EvidenceError as error:
        raise CaseError(str(error)) from None
    return count

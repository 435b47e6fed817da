"""Case bundles: read, write back, and errors that name file, line and field."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_support import standard

from kvitto.verify.case import CaseError, parse_registry, parse_time
from kvitto.verify.case_csv import parse_claims, parse_orders
from kvitto.verify.case_read import read_case
from kvitto.verify.case_write import format_claims, write_case

HEADER = (
    "claim_id,customer,staff,activity,start,end,registered_via,registered_at,approved_at,"
    "adjusted_at,double_staffing,count,reason,planned_start,planned_end,notified_at,proof\n"
)


def test_round_trip_through_write_case(tmp_path):
    b = standard(tmp_path / "a")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:00", "2026-10-01T08:30", count=2,
            reason="ok", planned_start="2026-10-01T08:00+02:00")  # fmt: skip
    case = read_case(b.write())
    copy = write_case(tmp_path / "b", case.registry, case.orders, case.claims,
                      [m for _, m in case.messages()])  # fmt: skip
    again = read_case(copy)
    assert again.claims == case.claims
    assert again.registry == case.registry
    assert again.orders == case.orders
    assert [m for _, m in again.messages()] == [m for _, m in case.messages()]


def test_local_time_without_offset_is_stockholm_with_dst():
    assert parse_time("2026-07-01T12:00") == datetime(2026, 7, 1, 10, tzinfo=timezone.utc)
    assert parse_time("2026-12-01T12:00") == datetime(2026, 12, 1, 11, tzinfo=timezone.utc)
    assert parse_time("2026-12-01T12:00Z") == datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("k-1,c-1001,s-07,226,2026-10-01T08:00,yesterday,tag,,,,,,,,,,", "line 2, field end"),
        (
            "k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T07:00,tag,,,,,,,,,,",
            "line 2, field end",
        ),
        (
            "k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,fax,,,,,,,,,,",
            "field registered_via",
        ),
        (
            "k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,tag,,,,2,,,,,,",
            "field double_staffing",
        ),
        ("k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,tag,,,,,-3,,,,,", "field count"),
        (",c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,tag,,,,,,,,,,", "field claim_id"),
        (
            "k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,tag,,,,,,,,,,,extra",
            "more fields",
        ),
    ],
)
def test_claim_errors_name_line_and_field(row, where):
    with pytest.raises(CaseError, match=where):
        parse_claims(HEADER + row + "\n", "claims.csv")


def test_duplicate_claim_id_names_both_lines():
    row = "k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,tag,,,,,,,,,,\n"
    with pytest.raises(CaseError, match="line 3, field claim_id: 'k-1' already on line 2"):
        parse_claims(HEADER + row + row)


def test_order_and_registry_errors():
    header = (
        "customer,activity,granted_minutes_month,valid_from,valid_to,double_staffing,tag_exempt\n"
    )
    with pytest.raises(CaseError, match="orders.csv line 2, field granted_minutes_month"):
        parse_orders(header + "c-1001,226,lots,2026-01-01,,0,0\n")
    with pytest.raises(CaseError, match="line 1: header lacks tag_exempt"):
        parse_orders(header.replace(",tag_exempt", "") + "c-1001,226,1,2026-01-01,,0\n")
    with pytest.raises(CaseError, match="registry.toml line 4, field public_key"):
        parse_registry('[[customer]]\nid = "c-1"\n\n[[device]]\nid = "tag-1"\ncustomer = "c-1"\n'
                       'role = "tag"\npublic_key = "abcd"\n')  # fmt: skip
    with pytest.raises(CaseError, match="field customer: unknown customer"):
        parse_registry('[[device]]\nid = "tag-1"\ncustomer = "c-9"\nrole = "tag"\n')
    with pytest.raises(CaseError, match="not valid TOML"):
        parse_registry("[[customer]\n")


def test_missing_file_and_unknown_customer(tmp_path):
    b = standard(tmp_path)
    b.claim("k-1", "c-9999", "s-07", "226", "2026-10-01T08:00", "2026-10-01T08:30")
    b.write()
    with pytest.raises(CaseError, match=r"claims.csv line 2, field customer: 'c-9999'"):
        read_case(tmp_path)
    (tmp_path / "orders.csv").unlink()
    with pytest.raises(CaseError, match="orders.csv: missing"):
        read_case(tmp_path)


def test_broken_evidence_names_the_item(tmp_path):
    b = standard(tmp_path)
    b.write()
    with open(tmp_path / "evidence.cbor-seq", "ab") as handle:
        handle.write(b"\x9f\x01")  # an indefinite array that never ends
    from kvitto.verify.check import verify_case

    with pytest.raises(CaseError, match=r"evidence.cbor-seq item 3"):
        verify_case(tmp_path, "norrtalje", "2026-10")


@settings(max_examples=60)
@given(st.text(alphabet=st.sampled_from(list('k-0123456789,T:"\n ')), max_size=80))
def test_claims_parser_fails_only_with_case_error(text):
    try:
        parse_claims(HEADER + text)
    except CaseError:
        pass


def test_format_claims_writes_every_field():
    claims = parse_claims(
        HEADER + "k-1,c-1001,s-07,226,2026-10-01T08:00,2026-10-01T09:00,manual,,,,1,3,x,,,,u\n"
    )
    again = parse_claims(format_claims(claims))
    assert again[0].double_staffing and again[0].count == 3 and again[0].proof == "u"
    assert again[0].start == claims[0].start and again[0].end == claims[0].end

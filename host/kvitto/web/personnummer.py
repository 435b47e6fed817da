"""Refuse Swedish personal identity numbers in free text: no personal data enters the store.

    from kvitto.web.personnummer import find_personnummer
    find_personnummer("kunden 19121212-1212 var sjuk")   # -> "19121212-1212"
    find_personnummer("besök 08:00-08:30, 2 matlådor")   # -> None

A personnummer (or samordningsnummer) is YYMMDD-NNNC with 10 digits, or YYYYMMDDNNNC with 12,
with or without the separator ('-' or '+'); C is the Luhn check digit over the ten digits
YYMMDDNNN (Skatteverket SKV 704). Any run of digits shaped like one whose check digit holds is
refused: a false alarm costs the coordinator a rewording, a miss puts a person in the store.
"""

from __future__ import annotations

import re

# 10 or 12 digits, an optional separator before the last four; not inside a longer number.
_CANDIDATE = re.compile(r"(?<![0-9])((?:\d{2})?\d{6})[-+ ]?(\d{4})(?![0-9])")


def luhn_ok(digits: str) -> bool:
    """The Luhn check over a string of digits (the last one is the check digit)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def find_personnummer(text: str) -> str | None:
    """The first personal identity number in `text`, as written there, or None."""
    for match in _CANDIDATE.finditer(text):
        date_part, tail = match.group(1), match.group(2)
        ten = (date_part[2:] if len(date_part) == 8 else date_part) + tail
        if len(date_part) == 8 and date_part[:2] not in ("18", "19", "20"):
            continue
        if luhn_ok(ten):
            return match.group(0)
    return None

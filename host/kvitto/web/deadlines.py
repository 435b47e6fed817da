"""The deadlines a claim of month M still has under a profile (RULES.md D1–D5), and the
reason codes a coordinator may give.

    left = nearest(profile, claim, now)   # Deadline("D3", "spärrdatum", moment) or None
    describe_left(left.moment, now)        # (weekdays, hours) until then

Only the deadlines a profile switches on count: D1 N days after the visit (after-the-fact
registration), D2 N hours after approval (adjustments), D3 the lock date (the Nth weekday of
M+1; Upplands-Bro escort and relief: the 15th of M+1, 002 §6.3), D4 the approval deadline (the
first weekday of M+1, at the profile's hour), D5 the 4th of M+1 (corrections by hand after it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from kvitto.verify.case import Claim
from kvitto.verify.rules import Profile
from kvitto.verify.workdays import end_of_day, is_weekday, local, local_at, next_month, nth_weekday

# Upplands-Bro 002 §6.3: escort and relief come on time sheets, entered by the 15th of M+1.
TIME_SHEET_ACTIVITIES = {"upplands-bro": ("ledsagning", "avlosning")}

# Reason codes for explanations and corrections (001 Arbetsprocess: technical failure must be
# explained; 003 Efterregistrering). A profile may name its own under [web] reasons = [...].
REASON_CODES = {
    "teknikfel": "Teknikfel: taggen, låset eller telefonen fungerade inte",
    "glomt-registrera": "Personalen glömde registrera vid besöket",
    "annan-tid": "Besöket gjordes vid en annan tid än registrerat",
    "fel-insats": "Fel insats registrerad",
    "dubbelregistrering": "Samma besök registrerat två gånger",
    "kunden-avbojde": "Kunden avböjde besöket",
    "behov-andrat": "Behovet har ändrats; biståndshandläggaren är kontaktad",
    "larm-forlangt": "Larmbesöket tog längre tid (dokumenterat skäl)",
    "ovrigt": "Annat skäl, beskrivet i texten",
}
DECISIONS = ("accept", "reject")


@dataclass(frozen=True)
class Deadline:
    rule: str
    label: str
    moment: datetime


def deadlines(profile: Profile, claim: Claim, month: str) -> list[Deadline]:
    year, number = (int(part) for part in month.split("-"))
    next_year, next_number = next_month(year, number)
    rules = profile.rules
    found: list[Deadline] = []
    if "D1" in rules:
        days = int(rules["D1"].get("days", 2))
        found.append(Deadline("D1", "efterregistrering",
                              end_of_day(claim.local_end.date() + timedelta(days=days))))  # fmt: skip
    if "D2" in rules and claim.approved_at is not None:
        hours = int(rules["D2"].get("hours", 72))
        found.append(Deadline("D2", "justering", claim.approved_at + timedelta(hours=hours)))
    if "D3" in rules:
        if claim.activity in TIME_SHEET_ACTIVITIES.get(profile.name, ()):
            found.append(
                Deadline("D3", "tidrapport", end_of_day(date(next_year, next_number, 15)))
            )
        else:
            weekday = int(rules["D3"].get("weekday", 3))
            found.append(
                Deadline(
                    "D3", "spärrdatum", end_of_day(nth_weekday(next_year, next_number, weekday))
                )
            )
    if "D4" in rules:
        first = nth_weekday(next_year, next_number, 1)
        clock = str(rules["D4"].get("at", ""))
        if clock:
            hour, minute = (int(x) for x in clock.split(":"))
            found.append(Deadline("D4", "attest", local_at(first, time(hour, minute))))
        else:
            found.append(Deadline("D4", "attest", end_of_day(first)))
    if "D5" in rules:
        day = int(rules["D5"].get("day", 4))
        found.append(Deadline("D5", "rättelse", end_of_day(date(next_year, next_number, day))))
    return found


def nearest(profile: Profile, claim: Claim, month: str, now: datetime) -> Deadline | None:
    """The earliest deadline still ahead; if all have passed, the last one that passed."""
    found = deadlines(profile, claim, month)
    ahead = [d for d in found if d.moment > now]
    if ahead:
        return min(ahead, key=lambda d: d.moment)
    return max(found, key=lambda d: d.moment) if found else None


def describe_left(moment: datetime, now: datetime) -> tuple[int, int]:
    """(weekdays, hours) from now until moment: whole Swedish weekdays strictly between the
    two days, then the hours left; negative weekdays/hours when it has passed."""
    if moment <= now:
        passed = now - moment
        return (-(passed.days), -int(passed.seconds // 3600))
    start, end = local(now), local(moment)
    weekdays = 0
    day = start.date() + timedelta(days=1)
    while day < end.date():
        weekdays += is_weekday(day)
        day += timedelta(days=1)
    if start.date() == end.date():
        hours = int((end - start).total_seconds() // 3600)
    else:
        midnight = datetime.combine(end.date(), time(0), tzinfo=end.tzinfo)
        hours = int((midnight - start).total_seconds() // 3600) % 24 + end.hour
        if hours >= 24:
            weekdays += 1
            hours -= 24
    return weekdays, hours


def reason_codes(profile: Profile) -> dict[str, str]:
    return dict(REASON_CODES)

"""The HTML report: one self-contained page an auditor opens offline (no script, no CDN),
Swedish first (`lang="sv"`), English on request.

    Path("rapport.html").write_text(to_html(result))            # svenska
    Path("report.html").write_text(to_html(result, lang="en"))

What it shows, per customer: a month's timeline (claims above the evidence at the door, hour
labels), then every claim in a table (time, activity by the profile's own name, outcome,
payable minutes, the rules that decided it), then the findings with their reasons; after the
customers the billing basis, the manual registrations per provider (E5), what was not checked
and the evidence issues; last a legend that explains every rule id the page uses in plain words
with its source section. Nothing depends on hovering: a phone has no pointer. Tables turn into
labelled rows below 560 px so no column is cut.
"""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from kvitto.verify.check import Result
from kvitto.verify.reasons import CATEGORIES, entry_text
from kvitto.verify.workdays import STOCKHOLM, local, month_bounds, parse_month

LANGS = ("sv", "en")

_T: dict[str, dict[str, str]] = {
    "sv": {
        "title": "Granskning",
        "summary": "{claims} registreringar, {findings} avvikelser, {issues} problem i "
        "underlaget. Tider i svensk tid (Europe/Stockholm).",
        "legend_bars": "Tidslinjen",
        "claim_bar": "registrering",
        "evidence_bar": "närvaro vid dörren (tagg eller lås)",
        "open_bar": "besök utan avslut",
        "claims": "Registreringar",
        "claim": "Registrering",
        "time": "Tid",
        "activity": "Insats",
        "outcome": "Utfall",
        "payable": "Betalbara minuter",
        "rules": "Regler",
        "findings": "Avvikelser",
        "rule": "Regel",
        "reason": "Skäl",
        "billing": "Underlag för ersättning",
        "customer": "Kund",
        "category": "Kategori",
        "count": "Antal (larm, matlådor)",
        "double": "Dubbelbemanning, minuter",
        "absence": "Frånvaro, minuter",
        "manual": "Manuella registreringar per utförare",
        "provider": "Utförare",
        "manual_count": "Antal",
        "not_checked": "Ej kontrollerat",
        "not_checked_intro": "Reglerna nedan kunde inte prövas för de nämnda registreringarna; "
        "en sådan registrering räknas som betalbar om ingen annan regel stoppar den.",
        "whole_case": "hela underlaget",
        "issues": "Problem i underlaget",
        "device": "Enhet",
        "seq": "Löpnummer",
        "legend": "Regler som nämns i rapporten",
        "source": "Källa",
        "timeline": "Tidslinje {customer}",
        "no_claims": "Inga registreringar.",
        "paid_unchecked": "betalbar, ej kontrollerad ({rules})",
        "hours": "Timme på dygnet",
        "day": "Dag",
        "presence": "Närvaro vid dörren",
        "who": "Vem",
        "open_visit": "öppet besök (ingen avgång)",
        "alarm_unit": "larmenhet",
    },
    "en": {
        "title": "Verification",
        "summary": "{claims} claims, {findings} findings, {issues} evidence issues. Times are "
        "Swedish time (Europe/Stockholm).",
        "legend_bars": "The timeline",
        "claim_bar": "claim",
        "evidence_bar": "presence at the door (tag or lock)",
        "open_bar": "visit without an end",
        "claims": "Claims",
        "claim": "Claim",
        "time": "Time",
        "activity": "Activity",
        "outcome": "Outcome",
        "payable": "Payable minutes",
        "rules": "Rules",
        "findings": "Findings",
        "rule": "Rule",
        "reason": "Reason",
        "billing": "Billing basis",
        "customer": "Customer",
        "category": "Category",
        "count": "Count (alarms, meal boxes)",
        "double": "Double staffing, minutes",
        "absence": "Absence, minutes",
        "manual": "Manual registrations per provider",
        "provider": "Provider",
        "manual_count": "Count",
        "not_checked": "Not checked",
        "not_checked_intro": "These rules could not be tried for the claims named; such a "
        "claim counts as payable unless another rule stops it.",
        "whole_case": "the whole case",
        "issues": "Evidence issues",
        "device": "Device",
        "seq": "Sequence",
        "legend": "Rules named in this report",
        "source": "Source",
        "timeline": "Timeline {customer}",
        "no_claims": "No claims.",
        "paid_unchecked": "payable, not checked ({rules})",
        "hours": "Hour of the day",
        "day": "Day",
        "presence": "Presence at the door",
        "who": "Who",
        "open_visit": "open visit (no departure)",
        "alarm_unit": "alarm unit",
    },
}

OUTCOMES = {
    "sv": {"ok": "godkänd", "reject": "avvisas", "adjust": "justeras", "follow_up": "följs upp"},
    "en": {"ok": "accepted", "reject": "reject", "adjust": "adjust", "follow_up": "follow up"},
}


# Every rule id in plain words (Swedish, English) and the source section (RULES.md; the
# municipalities' documents: 000 Norrtälje, 001 Huddinge, 002 Upplands-Bro, 003 Haninge,
# 004 Norrköping).
RULE_TEXT: dict[str, tuple[str, str, str]] = {
    "E1": ("Besök i hemmet betalas bara med kundens tagg eller lås: ankomst och avgång med samma "
           "inloggning täcker den registrerade tiden.",
           "A visit in the home is paid only with the customer's tag or lock: arrive and depart "
           "by the same credential cover the claimed time.", "000 §1.2.1–1.2.11; 003 Kvittenser"),
    "E2": ("Insatser som får registreras utanför hemmet behöver ingen tagg.",
           "Activities that may be registered away from the home need no tag.",
           "000 §1.2.2.2, §1.2.6.1; 001"),
    "E3": ("Kund med undantag beslutat av biståndshandläggaren granskas utan tagg.",
           "A customer with an assessor's exemption is verified without a tag.", "000 §1.2.8"),
    "E4": ("Hembesök av sjuksköterska, arbetsterapeut och fysioterapeut kräver tagg vid både "
           "ankomst och avgång, utan justering.",
           "Nurse, OT and PT home visits need the tag on arrival and departure, no adjustment.",
           "000 §1.2.4.2.1, §1.2.5.2.1"),
    "E5": ("Manuell eller efterhandsregistrering där tagg krävs följs upp och räknas per "
           "utförare och månad.",
           "A manual or after-the-fact registration where a tag was required is followed up "
           "and counted per provider and month.", "001 Arbetsprocess; 003 Efterregistrering"),
    "E6": ("En tagg hör till en kund; en annan kunds tagg är aldrig belägg.",
           "A tag belongs to one customer; another customer's tag is never evidence.",
           "001 Sammanboende; 003 NFC-etiketter"),
    "E7": ("Belägg räknas bara från utförarens registrerade telefoner och brickor.",
           "Evidence counts only from the provider's registered phones and badges.",
           "001 Arbetsprocess; 003 Mobiler"),
    "T1": ("Natt 22–07: Norrtälje följer upp (dokumentation krävs), Upplands-Bro avvisar "
           "(nattpatrullen gör hemtjänsten då).",
           "Night 22–07: Norrtälje follows up (documentation needed), Upplands-Bro rejects "
           "(the night patrol does home care then).", "000 §1.2.9; 002 §1.2, §8"),
    "T2": ("En person kan inte registrera mer än 60 minuter per timme: överlappande tid delas.",
           "One person cannot register more than 60 minutes per hour: overlapping time is "
           "shared.", "000 §1.2.7; 001 Sammanboende"),
    "T3": ("Tid över beviljad tid kräver handläggarens godkännande; överskottet följs upp.",
           "Time above the granted time needs the assessor's approval; the excess is followed "
           "up.", "003 Justerad tid; 002 §5"),
    "T4": ("En insats som inte finns i beställningen betalas inte.",
           "An activity not in the order is not paid.", "001 Extra besök; 002 §5"),
    "D1": ("Efterregistrering ska göras inom N dagar.",
           "After-the-fact registration within N days.", "001 Arbetsprocess"),
    "D2": ("Godkänt besök får justeras inom N timmar.",
           "An approved visit may be adjusted within N hours.", "001 Arbetsprocess"),
    "D3": ("Ändringar efter spärrdatum avvisas.", "Changes after the lock date are rejected.",
           "003 Spärrdatum; 002 §3.1, §6.1"),
    "D4": ("Månadens besök ska vara godkända senast första vardagen kl. 15.",
           "A month's visits must be approved by the first weekday at 15:00.",
           "001 Arbetsprocess; 000 §1.2.10"),
    "D5": ("Rättelser efter den 4:e följande månad hanteras manuellt.",
           "Corrections after the 4th of the next month are handled by hand.",
           "004 Uppehåll, verkställighet"),
    "D6": ("Insatser inom ramtid justeras inte utan ändrat behov.",
           "Frame-time activities are not adjusted without a changed need.",
           "004 Förändring av behov"),
    "C0": ("Ett besök är en närvaro vid dörren.", "A visit is one presence at the door.",
           "000 §1.2.1; 003 Sammanslagning"),
    "C1": ("Varje kategori rapporteras för sig.", "Each category is reported separately.",
           "000 §1.2.1"),
    "C2": ("Tillsyn registreras ensam.", "Supervision is registered alone.",
           "001 Tillsyn; 003 Sammanslagning"),
    "C3": ("Larmbesök registreras ensamt.", "An alarm visit is registered alone.", "002 §6.1"),
    "C4": ("Matdistribution registreras ensam.", "Meal delivery is registered alone.",
           "002 §6.1"),
    "C5": ("Ledsagning, avlösning och boendestöd hålls isär från hemtjänst.",
           "Escort, relief and housing support are kept apart from home care.",
           "001 Registrera rätt insatser"),
    "C6": ("Insatser utanför hemmet slås inte ihop med insatser i hemmet.",
           "Activities away from home are not merged with those in the home.",
           "003 Sammanslagning"),
    "C7": ("Förenklat beslutade insatser är ett eget besök.",
           "Simplified-assessment activities are a visit of their own.",
           "001 Förenklad biståndshandläggning"),
    "S1": ("Dubbelbemanning betalas bara om beställningen beviljar den.",
           "Double staffing is paid only when the order grants it.", "002 §7"),
    "S2": ("Vid dubbelbemanning registrerar en av två; den andra registreringen avvisas.",
           "With double staffing one of the two registers; the second claim is rejected.",
           "001 Dubbelbemanning; 002 §7; 003"),
    "S3": ("Två som delar en uppgift dubblar inte kundens tid.",
           "Two staff who split a task do not double the customer's time.", "002 §7"),
    "A1": ("Larmbesök registreras på kundens tagg; tiden begränsas av närvaron.",
           "An alarm visit is registered on the customer's tag; its time is bounded by the "
           "presence.", "000 §1.2.3; 002 §8.2"),
    "A2": ("Larmbesök betalas med standardtid; längre tid kräver skäl.",
           "An alarm visit is paid at a standard time; longer needs a reason.", "002 §6.1"),
    "A3": ("Ankomst inom N minuter från larmet.", "Arrival within N minutes of the alarm.",
           "002 §8, §8.2"),
    "A4": ("Utföraren svarar på larm 07–22; nattlarm är nattpatrullens.",
           "Providers answer alarms 07–22; night alarms are the night patrol's.", "002 §8"),
    "X1": ("Oplanerad frånvaro betalas med planerad tid under vissa villkor.",
           "Unplanned absence is paid at planned time on conditions.",
           "000 §1.2.2.3, §1.2.6.1; 003 Omställningstid"),
    "X2": ("Avböjt besök vid dörren registreras med taggen och betalas med planerad tid.",
           "A visit declined at the door is registered on the tag and paid at planned time.",
           "000 §1.2.2.4, §1.2.6.2"),
    "X3": ("Sent avbokat besök betalas som utfört.", "A late-cancelled visit is paid as "
           "performed.", "002 §6.1, §6.2"),
    "X4": ("Besök under uppehåll betalas inte.", "Visits during a pause are not paid.",
           "000 §1.2.2.5; 004 Uppehåll"),
    "X5": ("Inga besök betalas efter avslutad insats.", "No visit is paid after the service "
           "ended.", "004 Uppehåll, verkställighet och avslut"),
    "X6": ("Brådskande kortvarigt behov betalas från fjärde dagen.",
           "An urgent short-lived need is paid from the fourth day.",
           "004 Förändring av behov"),
    "B1": ("Matlådor räknas per leverans.", "Meal boxes are counted per delivery.",
           "002 §6.1"),
    "B2": ("Larmutryckningar räknas.", "Alarm call-outs are counted.", "002 §6.1"),
    "B3": ("Genomförandeplan ger uppstartsersättning en gång.",
           "A start-up plan gives start-up compensation once.", "002 §4, §10.2"),
    "B4": ("Månadens underlag per kund och kategori.", "The month's basis per customer and "
           "category.", "002 §3.2; 003 Fakturering"),
    "I1": ("Händelsen är signerad av en registrerad, ej återkallad enhet.",
           "The event is signed by a registered device that is not revoked.", "kvitto"),
    "I2": ("En händelse räknas en gång.", "An event counts once.", "kvitto"),
    "I3": ("Ett saknat löpnummer är saknat belägg.", "A missing sequence number is missing "
           "evidence.", "kvitto"),
    "I4": ("Varje händelse bär föregående händelses hash; en bruten kedja rapporteras.",
           "Each event carries the previous event's hash; a broken chain is reported.",
           "kvitto"),
    "I5": ("Enhetens klocka ska vara synkroniserad och stämma med mottagningstiden.",
           "The device clock must be synchronised and agree with the receive time.", "kvitto"),
    "I6": ("Okänd eller återkallad bricka är inte belägg.",
           "An unknown or revoked credential is not evidence.", "kvitto"),
}  # fmt: skip

_STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;padding:1em;color:#1a1a1a;max-width:72em}
h1{font-size:1.35em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #bbb}
h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.5em 0;width:100%}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num,th.num{text-align:right}
.reject{color:#a00000;font-weight:600}.adjust{color:#8a4b00;font-weight:600}
.follow_up{color:#5b2c83;font-weight:600}.ok{color:#1b6e3a}
.timeline{margin:.5em 0}.day{display:flex;align-items:center;min-height:26px}
.date{flex:0 0 5.5em;font-size:13px}
.track{position:relative;flex:1;height:24px;background:repeating-linear-gradient(90deg,#f4f4f4 0,#f4f4f4 calc(100%/24 - 1px),#d6d6d6 calc(100%/24 - 1px),#d6d6d6 calc(100%/24))}
.hours{position:relative;flex:1;height:1.3em;font-size:12px}
.hours span{position:absolute;transform:translateX(-50%)}
.hours span:first-child{transform:none}.hours span:last-child{transform:translateX(-100%)}
.bar{position:absolute;height:10px;border-radius:2px;min-width:3px}
.bar.claim{top:1px;background:#2f6fc4}.bar.evidence{top:13px;background:#24814a}
.bar.open{background:repeating-linear-gradient(45deg,#24814a 0,#24814a 3px,#fff 3px,#fff 6px)}
.bar.reject{background:#b00020}.bar.adjust{background:#c76a00}.bar.follow_up{background:#7b3fa8}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1.2em;padding:0;list-style:none}
.legend li{white-space:nowrap}
.swatch{display:inline-block;width:14px;height:10px;margin-right:5px;border-radius:2px}
dl.rules dt{font-weight:600;margin-top:.6em}dl.rules dd{margin:0 0 0 1.5em}
.source{color:#444;font-size:13px}
@media (max-width:560px){
 body{padding:.6em}
 table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
 table.stack thead{position:absolute;left:-9999px}
 table.stack tr{border:1px solid #ccc;margin:0 0 .6em}
 table.stack td{border:none;border-bottom:1px solid #eee;display:flex;gap:.6em}
 table.stack td::before{content:attr(data-label);flex:0 0 45%;font-weight:600;color:#333}
 table.stack td.num{text-align:left}
 .date{flex-basis:4.2em;font-size:12px}
}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _position(moment: datetime, day_start: datetime, day_end: datetime) -> float:
    # Through UTC: a day with a daylight-saving change has 23 or 25 hours.
    utc = timezone.utc
    seconds = (moment.astimezone(utc) - day_start.astimezone(utc)).total_seconds()
    length = (day_end.astimezone(utc) - day_start.astimezone(utc)).total_seconds()
    return max(0.0, min(100.0, 100 * seconds / length))


def _table(head: list[tuple[str, str]], rows: list[list[tuple[str, str]]]) -> str:
    """A table that stacks into labelled rows on a phone: head is (label, css class), each
    cell (html, css class)."""
    out = ["<table class='stack'><thead><tr>"]
    out += [f"<th scope='col' class='{css}'>{_e(label)}</th>" for label, css in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        out += [
            f"<td class='{css}' data-label='{_e(label)}'>{cell}</td>"
            for (label, _), (cell, css) in zip(head, row, strict=True)
        ]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _rule_link(rule: str) -> str:
    return f"<a href='#regel-{_e(rule)}'>{_e(rule)}</a>"


def to_html(result: Result, lang: str = "sv") -> str:
    from kvitto.verify.rules import load_profile

    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}")
    t, outcome_name, category_name = _T[lang], OUTCOMES[lang], CATEGORIES[lang]
    try:
        profile = load_profile(result.profile)
        activities = {code: a.name for code, a in profile.activities.items()}
        municipality = profile.municipality
    except Exception:  # a profile given as a file that moved since: codes, not names
        activities, municipality = {}, result.profile
    year, month = parse_month(result.month)
    first, after = month_bounds(year, month)
    rank = {"follow_up": 1, "adjust": 2, "reject": 3}
    worst: dict[str, str] = {}
    by_claim: dict[str, list[Any]] = defaultdict(list)
    for f in result.findings:
        by_claim[f.claim_id].append(f)
        if rank[f.outcome] > rank.get(worst.get(f.claim_id, ""), 0):
            worst[f.claim_id] = f.outcome
    # the profile's own section for a rule (findings and not_checked carry it), else ours
    sources = {f.rule: f.source for f in result.findings if getattr(f, "source", "")}
    sources.update({e["rule"]: e["source"] for e in result.not_checked if e.get("source")})
    unchecked: dict[str, list[str]] = defaultdict(list)
    for entry in result.not_checked:
        if entry.get("claim_id"):
            unchecked[entry["claim_id"]].append(entry["rule"])
    named_rules: set[str] = set()
    customers = sorted({c.customer for c in result.claims})
    out = [
        f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>kvitto: {_e(t['title'])} {_e(municipality)} {result.month}</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        f"<h1>{_e(t['title'])} {_e(municipality)}, {result.month}</h1>",
        "<p>"
        + _e(
            t["summary"].format(
                claims=len(result.claims),
                findings=len(result.findings),
                issues=len(result.integrity),
            )
        )
        + "</p>",
        f"<h2>{_e(t['legend_bars'])}</h2><ul class='legend'>",
    ]
    swatches = [
        ("claim", t["claim_bar"]),
        ("evidence", t["evidence_bar"]),
        ("evidence open", t["open_bar"]),
        ("claim reject", outcome_name["reject"]),
        ("claim adjust", outcome_name["adjust"]),
        ("claim follow_up", outcome_name["follow_up"]),
    ]
    out += [
        f"<li><span class='swatch bar {css}' style='position:static'></span>{_e(label)}</li>"
        for css, label in swatches
    ]
    out.append("</ul>")
    presences = result.evidence.by_customer if result.evidence else {}
    hours = "".join(
        f"<span style='left:{100 * h / 24:.2f}%'>{h:02d}</span>" for h in range(0, 25, 6)
    )
    for customer in customers:
        claims = [c for c in result.claims if c.customer == customer]
        out.append(f"<h2 id='kund-{_e(customer)}'>{_e(t['customer'])} {_e(customer)}</h2>")
        out.append(
            f"<div class='timeline' role='img' aria-label='{_e(t['timeline'].format(customer=customer))}'>"
            f"<div class='day' aria-hidden='true'><div class='date'></div>"
            f"<div class='hours'>{hours}</div></div>"
        )
        day = first
        while day < after:
            following = day.date() + timedelta(days=1)
            day_end = datetime(following.year, following.month, following.day, tzinfo=STOCKHOLM)
            bars = []
            for c in claims:
                if c.end < day or c.start >= day_end:
                    continue
                left = _position(max(c.start, day), day, day_end)
                right = _position(min(c.end, day_end), day, day_end)
                css = worst.get(c.claim_id, "")
                bars.append(
                    f"<div class='bar claim {css}' style='left:{left:.2f}%;"
                    f"width:{max(right - left, 0.3):.2f}%'></div>"
                )
            for p in presences.get(customer, []):
                end = p.end or p.start + timedelta(minutes=30)
                if end < day or p.start >= day_end:
                    continue
                left = _position(max(p.start, day), day, day_end)
                right = _position(min(end, day_end), day, day_end)
                css = "open" if p.end is None else ""
                bars.append(
                    f"<div class='bar evidence {css}' style='left:{left:.2f}%;"
                    f"width:{max(right - left, 0.3):.2f}%'></div>"
                )
            if bars:
                out.append(
                    f"<div class='day' aria-hidden='true'><div class='date'>{day:%d/%m}</div>"
                    f"<div class='track'>{''.join(bars)}</div></div>"
                )
            day = day_end
        out.append("</div>")
        out.append(f"<h3>{_e(t['claims'])}</h3>")
        rows = []
        for c in claims:
            found = by_claim.get(c.claim_id, [])
            rules = sorted({f.rule for f in found})
            named_rules.update(rules)
            if found:
                outcome = worst[c.claim_id]
                payable = min(f.payable_minutes for f in found)
                verdict = (
                    f"<span class='{outcome}'>{_e(outcome_name[outcome])}</span> "
                    + ", ".join(_rule_link(r) for r in rules)
                )
            else:
                payable = c.minutes
                verdict = f"<span class='ok'>{_e(outcome_name['ok'])}</span>"
            if unchecked.get(c.claim_id):
                skipped = sorted(set(unchecked[c.claim_id]))
                named_rules.update(skipped)
                verdict += "; " + t["paid_unchecked"].format(
                    rules=", ".join(_rule_link(r) for r in skipped)
                )
            start, end = local(c.start), local(c.end)
            when = f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}"
            name = activities.get(c.activity)
            activity = f"{_e(name)} ({_e(c.activity)})" if name else _e(c.activity)
            rows.append([(_e(c.claim_id), ""), (when, ""), (activity, ""), (verdict, ""),
                         (str(payable), "num")])  # fmt: skip
        out.append(
            _table(
                [
                    (t["claim"], ""),
                    (t["time"], ""),
                    (t["activity"], ""),
                    (t["outcome"], ""),
                    (t["payable"], "num"),
                ],
                rows,
            )  # fmt: skip
        )
        seen = [p for p in presences.get(customer, []) if first <= p.start < after]
        if seen:
            out.append(f"<h3>{_e(t['presence'])}</h3>")
            out.append(
                _table(
                    [(t["time"], ""), (t["device"], ""), (t["who"], "")],
                    [
                        [
                            (
                                f"{local(p.start):%Y-%m-%d %H:%M}–{local(p.end):%H:%M}"
                                if p.end
                                else f"{local(p.start):%Y-%m-%d %H:%M}, {_e(t['open_visit'])}",
                                "",
                            ),
                            (_e(p.device), ""),
                            (_e(p.staff or p.credential[:8] or t["alarm_unit"]), ""),
                        ]
                        for p in seen
                    ],
                )  # fmt: skip
            )
        found_rows = [f for f in result.findings if f.customer == customer]
        if found_rows:
            out.append(f"<h3>{_e(t['findings'])}</h3>")
            out.append(
                _table(
                    [
                        (t["claim"], ""),
                        (t["rule"], ""),
                        (t["outcome"], ""),
                        (t["payable"], "num"),
                        (t["reason"], ""),
                    ],
                    [
                        [
                            (_e(f.claim_id), ""),
                            (_rule_link(f.rule), ""),
                            (
                                f"<span class='{f.outcome}'>{_e(outcome_name[f.outcome])}</span>",
                                "",
                            ),
                            (str(f.payable_minutes), "num"),
                            (_e(f.text(lang)), ""),
                        ]
                        for f in found_rows
                    ],
                )  # fmt: skip
            )
    if not customers:
        out.append(f"<p>{_e(t['no_claims'])}</p>")
    out.append(f"<h2>{_e(t['billing'])}</h2>")
    optional = [
        ("count", t["count"]),
        ("double_staffing_minutes", t["double"]),
        ("absence_minutes", t["absence"]),
    ]
    shown = [(key, label) for key, label in optional if any(r.get(key) for r in result.billing)]
    out.append(
        _table(
            [(t["customer"], ""), (t["category"], ""), (t["payable"], "num")]
            + [(label, "num") for _, label in shown],
            [
                [
                    (_e(r["customer"]), ""),
                    (_e(category_name.get(r["category"], r["category"])), ""),
                    (str(r["payable_minutes"]), "num"),
                ]
                + [(str(r.get(key, 0)), "num") for key, _ in shown]
                for r in result.billing
            ],
        )  # fmt: skip
    )
    manual = result.counts.get("manual_registrations")
    if isinstance(manual, dict) and manual:
        named_rules.add("E5")
        out.append(f"<h2>{_e(t['manual'])} ({_rule_link('E5')})</h2>")
        out.append(
            _table(
                [(t["provider"], ""), (t["manual_count"], "num")],
                [
                    [(_e(provider), ""), (_e(count), "num")]
                    for provider, count in sorted(manual.items())
                ],
            )  # fmt: skip
        )
    if result.not_checked:
        out.append(f"<h2>{_e(t['not_checked'])}</h2><p>{_e(t['not_checked_intro'])}</p><ul>")
        for entry in result.not_checked:
            named_rules.add(entry["rule"])
            who = _e(entry["claim_id"]) if entry.get("claim_id") else _e(t["whole_case"])
            out.append(
                f"<li>{_rule_link(entry['rule'])}, {who}: {_e(entry_text(entry, lang))}</li>"
            )
        out.append("</ul>")
    if result.integrity:
        out.append(f"<h2>{_e(t['issues'])}</h2>")
        named_rules.update(str(issue["rule"]) for issue in result.integrity)
        out.append(
            _table(
                [(t["rule"], ""), (t["device"], ""), (t["seq"], "num"), (t["reason"], "")],
                [
                    [
                        (_rule_link(str(i["rule"])), ""),
                        (_e(i.get("device", "")), ""),
                        (_e(i.get("seq", "")), "num"),
                        (_e(i.get("reason", "")), ""),
                    ]
                    for i in result.integrity
                ],
            )  # fmt: skip
        )
    if named_rules:
        out.append(f"<h2>{_e(t['legend'])}</h2><dl class='rules'>")
        for rule in sorted(named_rules):
            sv, en, source = RULE_TEXT.get(rule, ("", "", ""))
            source = sources.get(rule) or source
            text = sv if lang == "sv" else en
            out.append(
                f"<dt id='regel-{_e(rule)}'>{_e(rule)}</dt><dd>{_e(text)} "
                f"<span class='source'>{_e(t['source'])}: {_e(source)}</span></dd>"
            )
        out.append("</dl>")
    out.append("</main></body></html>\n")
    return "\n".join(out)

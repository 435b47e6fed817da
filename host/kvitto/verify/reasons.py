"""A finding's reason as a code and its parameters, put into words at the edge, in the reader's
language: Swedish (the default) or English, from the catalogue reasons.toml.

    why = because("T1.night_documented", claimed="2026-10-03 22:41–22:54", minutes=13)
    why.text("sv")   # "registrerat 2026-10-03 22:41–22:54: 13 min under natten …"
    why.text("en")   # "claimed 2026-10-03 22:41–22:54: 13 min at night …"

A rule never writes a sentence: it names a reason variant of its own (`RULE.variant`) and the
numbers, times, claim ids and activity names behind it. What is stored (the web's verdicts) and
compared (a finding's identity) is the code and the parameters, never the rendered text, so a
change of wording changes no verdict (docs/decisions.md "Reasons in the reader's language").
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

try:
    import tomllib  # pyright: ignore[reportMissingImports]
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

LANGS = ("sv", "en")
DEFAULT = "sv"
CATALOGUE = Path(__file__).resolve().parent / "reasons.toml"
# Codes no rule gives any more, kept in the catalogue so that verdicts stored with them (the
# web's verdicts.reason) still read: a newer code took their place with other arguments.
RETIRED = ("T3.excess_not_paid",)  # T3.excess_unpaid_without_reason names the lock date
# The profiles' billing categories in words (a reason's `category`/`categories` parameters and
# the report's billing table name them so, never by their codes).
CATEGORIES = {
    "sv": {"hemtjanst": "hemtjänst", "hemsjukvard": "hemsjukvård", "hemrehab": "hemrehab",
           "larm": "larm och välfärdsteknik", "mat": "matdistribution",
           "forenklad": "förenklad biståndshandläggning",
           "ledsagning-avlosning": "ledsagning och avlösning", "okand": "okänd"},
    "en": {"hemtjanst": "home care", "hemsjukvard": "home nursing", "hemrehab": "home rehab",
           "larm": "alarm and welfare technology", "mat": "meal delivery",
           "forenklad": "simplified assessment", "ledsagning-avlosning": "escort and relief",
           "okand": "unknown"},
}  # fmt: skip


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """code → {"sv": template, "en": template}; the TOML's [RULE.variant] tables."""
    data = tomllib.loads(CATALOGUE.read_text(encoding="utf-8"))
    return {
        f"{rule}.{variant}": {lang: str(text) for lang, text in texts.items()}
        for rule, variants in data.items()
        for variant, texts in variants.items()
    }


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True, slots=True)
class Reason:
    """A reason code and its parameters (sorted pairs: hashable, picklable, comparable). A
    parameter is a number, a text, another reason (why a tap was refused) or a tuple of them,
    put into words in the same language (a tuple joined by "; ")."""

    code: str
    args: tuple[tuple[str, Any], ...] = ()

    def text(self, lang: str = DEFAULT) -> str:
        texts = catalogue().get(self.code)
        if texts is None:
            raise KeyError(f"reason {self.code!r} is not in {CATALOGUE.name}")
        lang = lang if lang in LANGS else DEFAULT
        values = {name: _words(value, lang) for name, value in self.args}
        for name in ("category", "categories"):
            if name in values:
                names = CATEGORIES[lang]
                values[name] = ", ".join(names.get(c, c) for c in str(values[name]).split(", "))
        return texts[lang].format(**values)

    def as_json(self) -> dict[str, Any]:
        """{"code", "args"}; a tuple of reasons as a list of such objects."""
        return {"code": self.code, "args": {name: _json(value) for name, value in self.args}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reason:
        args = dict(data.get("args") or {})
        return because(str(data["code"]), **{name: _read(value) for name, value in args.items()})

    def stored(self) -> str:
        """The reason as one JSON text (the web's verdicts.reason column)."""
        return json.dumps(self.as_json(), ensure_ascii=False)

    @classmethod
    def from_stored(cls, text: str) -> Reason | None:
        """The reason a stored text holds; None for plain text (stored before reason codes)."""
        if not text.startswith("{"):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("code") not in catalogue():
            return None
        return cls.from_json(data)


def _words(value: Any, lang: str) -> Any:
    if isinstance(value, Reason):
        return value.text(lang)
    if isinstance(value, tuple):
        return "; ".join(_words(item, lang) for item in value)
    return value


def _json(value: Any) -> Any:
    if isinstance(value, Reason):
        return value.as_json()
    if isinstance(value, tuple):
        return [_json(item) for item in value]
    return value


def _read(value: Any) -> Any:
    if isinstance(value, dict) and "code" in value:
        return Reason.from_json(value)
    if isinstance(value, list):
        return tuple(_read(item) for item in value)
    return value


def because(code: str, **args: Any) -> Reason:
    return Reason(code, tuple(sorted(args.items())))


def said(stored: str, lang: str = DEFAULT) -> str:
    """A stored reason in the reader's language (plain text from before codes as it is)."""
    reason = Reason.from_stored(stored)
    return reason.text(lang) if reason is not None else stored


def entry_text(entry: dict[str, Any], lang: str = DEFAULT) -> str:
    """A not_checked entry's reason: a rule's Reason, or a profile's own text (reason in
    English, reason_sv in Swedish) or a plain one."""
    reason = entry.get("reason", "")
    if isinstance(reason, Reason):
        return reason.text(lang)
    if lang == "sv" and entry.get("reason_sv"):
        return str(entry["reason_sv"])
    return str(reason)


def entry_dict(entry: dict[str, Any], lang: str = DEFAULT) -> dict[str, Any]:
    """A not_checked entry for JSON: the reason in words, and its code and parameters when a
    rule gave them."""
    out = {k: v for k, v in entry.items() if k not in ("reason", "reason_sv")}
    out["reason"] = entry_text(entry, lang)
    reason = entry.get("reason")
    if isinstance(reason, Reason):
        out["reason_code"] = reason.code
        out["reason_args"] = reason.as_json()["args"]
    return out

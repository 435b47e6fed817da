"""Swedish (the default) and English for the pages: Babel catalogues and formats.

    translations = catalogue("en")            # gettext for Jinja2's i18n extension
    format_moment(moment, "sv")               # "7 dec. 2026 14:05"

The pages are written in Swedish; translations/en/LC_MESSAGES/messages.po holds the English.
Catalogues are compiled in memory with Babel at start-up (no build step, no .mo in git).
"""

from __future__ import annotations

import io
from datetime import datetime
from functools import cache
from pathlib import Path

from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import NullTranslations, Translations

from kvitto.verify.workdays import STOCKHOLM

LANGUAGES = ("sv", "en")
DEFAULT = "sv"
FOLDER = Path(__file__).resolve().parent / "translations"


@cache
def catalogue(language: str) -> NullTranslations:
    po = FOLDER / language / "LC_MESSAGES" / "messages.po"
    if language == DEFAULT or not po.exists():
        return NullTranslations()
    with po.open("rb") as handle:
        parsed = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, parsed)
    buffer.seek(0)
    return Translations(buffer)


def locale_of(language: str) -> str:
    return "sv_SE" if language == "sv" else "en_GB"


def format_moment(moment: datetime | None, language: str, pattern: str = "d MMM y HH:mm") -> str:
    if moment is None:
        return "–"
    return format_datetime(moment.astimezone(STOCKHOLM), pattern, locale=locale_of(language))


def format_number(value: float, language: str) -> str:
    return format_decimal(value, locale=locale_of(language))


def format_share(value: float, language: str) -> str:
    return format_percent(value, "#0.0 %", locale=locale_of(language))

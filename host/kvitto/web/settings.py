"""What the pages share with the server: the store, the clock, TLS in front, the templates.

settings = request.app.state.settings       # a Settings, set by kvitto.web.app.create_app
settings.templates.get_template("login.html")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from kvitto.store.db import Store

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "kvitto_session"
CSRF_COOKIE = "kvitto_csrf"


@dataclass
class Settings:
    """What the pages need from the server: the store, the clock, whether TLS is in front."""

    store: Store
    clock: Callable[[], datetime]
    secure: bool
    templates: Environment
    live_interval_s: float = 1.0


def templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )

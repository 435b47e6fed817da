"""The rows the deviation pages list: a finding on a claim with its nearest deadline (Row), and an
event on its timeline (EventView). kvitto.web.scope.Scope builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kvitto.web.deadlines import Deadline


@dataclass
class Row:
    """One deviation: a finding on a claim, with its nearest deadline."""

    provider: str
    month: str
    customer: str
    claim_id: str
    rule: str
    outcome: str
    payable_minutes: int
    reason: str  # the reason code and parameters as stored (kvitto.verify.reasons.said)
    activity: str
    staff: str
    start: datetime | None
    end: datetime | None
    deadline: Deadline | None = None
    decision: dict[str, Any] = field(default_factory=dict)
    timeline: list[EventView] = field(default_factory=list)


@dataclass
class EventView:
    device: str
    role: str
    seq: int
    type: str
    at: datetime | None
    credential: str
    staff: str
    via: str
    chain: int | None
    signature: str  # "ok", "bad", "unchecked"

"""anchor_boot (I5) finds each event's clock_sync by bisection; it must pick exactly the sync the
plain rule names: the last at or before the event's uptime, else the first after it."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from kvitto.evidence.events import Event
from kvitto.verify.visits import anchor_boot

MAX_SYNC_AGE_S = 3600


def reference(events: list[Event]) -> list[tuple[datetime | None, bool]]:
    syncs = sorted((e.up, e.t) for e in events if e.type == "clock_sync" and e.t is not None)
    out: list[tuple[datetime | None, bool]] = []
    for event in events:
        if syncs:
            before = [s for s in syncs if s[0] <= event.up]
            up_ms, wall = before[-1] if before else syncs[0]
            seconds = wall + (event.up - up_ms) / 1000
            age_ok = abs(event.up - up_ms) / 1000 <= MAX_SYNC_AGE_S
            out.append((datetime.fromtimestamp(seconds, timezone.utc), age_ok))
        elif event.t is not None:
            synced = event.sync is not None and event.sync <= MAX_SYNC_AGE_S
            out.append((datetime.fromtimestamp(event.t, timezone.utc), synced))
        else:
            out.append((None, False))
    return out


events = st.lists(
    st.builds(
        lambda seq, up, kind, t: Event(
            "tag-0042", seq, 1, up, kind, bytes(32), t, 0 if t is not None else None
        ),
        st.integers(1, 1000),
        st.integers(0, 10_000_000).map(lambda up: up - up % 500),  # equal uptimes happen
        st.sampled_from(["clock_sync", "clock_sync", "arrive", "door_open"]),
        st.none() | st.integers(1_790_000_000, 1_790_100_000),
    ),
    max_size=30,
)


@settings(max_examples=300)
@given(events)
def test_each_event_takes_the_sync_the_rule_names(boot):
    assert [(item.time, item.synced) for item in anchor_boot(boot, MAX_SYNC_AGE_S)] == reference(
        boot
    )

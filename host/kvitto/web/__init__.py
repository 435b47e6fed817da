"""`kvitto serve`: the web application where providers and municipalities close the month.

    from kvitto.web.app import create_app
    app = create_app("sqlite:///kvitto.db", secret=b"...")     # a Starlette ASGI app
    # kvitto serve --store sqlite:///kvitto.db  runs it under uvicorn

It owns the web's tables in the store (users, sessions, imported claims, the plan, people's
records, verdicts), per-address rate limits on the routes anyone can reach (`throttle.py`),
the scoped data layer every page reads through (`scope.py`: provider and
municipality isolation in one place, on the gate of `visibility.py`; the deviation rows:
`rows.py`), corrections as hash-chained records (`records.py`; the claims as corrected: `claims.py`), re-judging
with kvitto's rules (`judge.py`; `kvitto judge --live` keeping each month's events and claims
between rounds: `live.py`), the pages (`pages.py`; what every page shares:
`page_frame.py`; templates/, static/, translations/), and staff phones at the door without an
app (`door.py`: passkey enrolment, door URLs confirmed with a passkey; `door_reads.py`: the
checks of a read and its confirmation; `door_away.py`: away from the home (RULES E2), the
passkey over the registration itself; `door_bundle.py`: their proofs for the rules and case
bundles; docs/phone.md). It imports the store, registry, case and verify modules; none of them
imports it.
"""

"""A case bundle's door proofs (docs/formats.md, door.jsonl v1), from the store.

    (case / "door.jsonl").write_text(door_lines(store, "p-1", "2026-11"))

kvitto.web.door stores the proofs; kvitto.verify.door_proofs re-checks this file offline.
"""

from __future__ import annotations

import json
from typing import Any

from kvitto.store.db import Store
from kvitto.verify.workdays import month_bounds, parse_month
from kvitto.web import records as chain


def door_lines(store: Store, provider: str, month: str) -> str:
    """door.jsonl of a case bundle (docs/formats.md, door.jsonl v1): the provider's door
    proofs of the month, each with the claims registered on it."""
    return "".join(
        json.dumps(e, sort_keys=True) + "\n" for e in door_entries(store, provider, month)
    )


def door_entries(store: Store, provider: str, month: str) -> list[dict[str, Any]]:
    """The provider's door proofs of the month, as door.jsonl's lines: arrives and departs at
    the door, and away registrations (action and proof kind `away`, kvitto.web.door_away)."""
    start, end = month_bounds(*parse_month(month))
    claims: dict[int, list[str]] = {}
    for record in chain.records(store, chains=[provider], kinds=("register",)):
        if record.body.get("via") in ("door", "away"):
            for proof_id in record.body.get("proofs", []):
                claims.setdefault(int(proof_id), []).append(record.claim_id)
    rows = store.execute(
        "SELECT id, action, at, customer, credential, proof FROM door_proofs "
        "WHERE provider = ? AND at >= ? AND at < ? ORDER BY at, id",
        (provider, int(start.timestamp() * 1000), int(end.timestamp() * 1000)),
    )
    lines: list[dict[str, Any]] = []
    for proof_id, action, at, customer, credential, proof in rows:
        lines.append({
            "id": int(proof_id), "action": str(action), "at": int(at),
            "customer": str(customer), "credential": str(credential),
            "claims": claims.get(int(proof_id), []), "proof": json.loads(proof),
        })  # fmt: skip
    return lines

"""A case bundle's door proofs (docs/formats.md, door.jsonl v1), from the store.

    (case / "door.jsonl").write_text(door_lines(store, "p-1", "2026-11"))

kvitto.web.door stores the proofs; kvitto.verify.door_proofs re-checks this file offline.
"""

from __future__ import annotations

import json

from kvitto.store.db import Store
from kvitto.web import records as chain
from kvitto.web.scope import month_range, ms


def door_lines(store: Store, provider: str, month: str) -> str:
    """door.jsonl of a case bundle (docs/formats.md, door.jsonl v1): the provider's door
    proofs of the month, each with the claims registered on it."""
    start, end = month_range(month)
    claims: dict[int, list[str]] = {}
    for record in chain.records(store, chains=[provider], kinds=("register",)):
        if record.body.get("via") == "door":
            for proof_id in record.body.get("proofs", []):
                claims.setdefault(int(proof_id), []).append(record.claim_id)
    rows = store.execute(
        "SELECT id, action, at, customer, credential, proof FROM door_proofs "
        "WHERE provider = ? AND at >= ? AND at < ? ORDER BY at, id",
        (provider, ms(start), ms(end)),
    )
    lines = []
    for proof_id, action, at, customer, credential, proof in rows:
        lines.append(json.dumps({
            "id": int(proof_id), "action": str(action), "at": int(at),
            "customer": str(customer), "credential": str(credential),
            "claims": claims.get(int(proof_id), []), "proof": json.loads(proof),
        }, sort_keys=True) + "\n")  # fmt: skip
    return "".join(lines)

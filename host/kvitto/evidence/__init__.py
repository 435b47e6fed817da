"""Evidence: the signed bytes themselves, checked by pure functions (no files, no network).

COSE_Sign1 and deterministic CBOR (`cose`), device events and their fields (`events`), the
hash chain of one device's stream (`chain`), commands to devices (`commands`), and the tap
proofs a door checks: phones (`phone`) and NTAG 424 DNA SUN messages (`ntag424`).
Imports nothing of kvitto but `kvitto.errors`.
"""

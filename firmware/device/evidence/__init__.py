"""Evidence: what makes a visit verifiable. Canonical CBOR, COSE_Sign1, Ed25519 over SHA-512,
the event payload, the append-only journal and the device's own key (DESIGN.md, The event).

    from device.evidence import event
    payload = event.build_payload("tag-0001", 1, 1, 0, "boot", None)   # FORMATS.md §1

Pure code: imports nothing from drivers, link, roles or app, and no hardware (the journal gets
its filesystem root, identity its RNG, as arguments).
"""

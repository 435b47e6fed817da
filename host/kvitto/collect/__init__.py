"""Collecting: device events from MQTT (or a file) verified, stored once and acknowledged.

The intake of signed messages (`intake`: verify, dedupe, chain, quarantine; `kvitto ingest`),
the MQTT collector that acknowledges, asks for resends and sends queued commands
(`collector`), what an operator watches of it (`watch`: its counters and the rate-limited
log of quarantined messages), and the `kvitto collect` loop with its live view (`live`). Imports
`kvitto.store` and `kvitto.evidence`, never verify or install.
"""

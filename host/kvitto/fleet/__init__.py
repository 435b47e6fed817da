"""Running a fleet of devices (issue #22): what each device's signed health reports say and
which alerts they raise (`status`, `kvitto fleet`), and signed firmware releases (`release`).

Reads the store (events the collector stored, the registry) and checks signed bytes with
`kvitto.evidence`; imports no other domain (docs/architecture.md).
"""

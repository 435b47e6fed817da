"""The store: what kvitto keeps between runs, and the rules for changing it.

The database (`db`: SQLite or PostgreSQL, the same schema in both) and that schema as numbered
migrations (`migrations`), the
registry of customers, devices, credentials and MQTT accounts (`registry`), the outbox of
commands waiting for their device (`outbox`), the refused messages for an operator
(`quarantine`: `kvitto quarantine list`), the marks of customer-months changed since they were
judged and what the judges kept (`stale`), and the organisation's key folder as readers need it
(`keys`). Imports `kvitto.evidence` and nothing above.
"""

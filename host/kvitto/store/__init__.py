"""The store: what kvitto keeps between runs, and the rules for changing it.

The database and its migrations (`db`: SQLite or PostgreSQL, the same schema in both), the
registry of customers, devices, credentials and MQTT accounts (`registry`), and the outbox of
commands waiting for their device (`outbox`). Imports `kvitto.evidence` and nothing above.
"""

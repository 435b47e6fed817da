"""The store's schema as numbered migrations (MIGRATIONS), the same in SQLite and PostgreSQL: each
statement is written once with {blob}, {bigint}, {serial}, {clustered} and {now_ms} for the
column types that differ (TYPES[dialect]). kvitto.store.db's Store.migrate runs the versions a
store has not had yet and records them in `schema_version`.

Append new versions; never edit a released one.
"""

from __future__ import annotations

# Column types that differ between the two databases; everything else is common SQL.
TYPES = {
    "sqlite": {
        "blob": "BLOB",
        "bigint": "INTEGER",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "clustered": "WITHOUT ROWID",
        "now_ms": "(CAST(strftime('%s', 'now') AS INTEGER) * 1000)",
    },
    "postgresql": {
        "blob": "BYTEA",
        "bigint": "BIGINT",
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "clustered": "",
        "now_ms": "(CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT))",
    },
}


# The schema version that adds the `revocations` table (readers of an older store skip it).
REVOCATIONS_SINCE = 3


# (version, what it does, statements). Append new versions; never edit a released one.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "registry, events, quarantine, command sequence, device state",
        [
            """CREATE TABLE customers (
                id TEXT PRIMARY KEY,
                household TEXT NOT NULL DEFAULT '',
                age_group TEXT NOT NULL DEFAULT '')""",
            """CREATE TABLE devices (
                id TEXT PRIMARY KEY,
                customer TEXT NOT NULL REFERENCES customers(id),
                role TEXT NOT NULL,
                public_key {blob} NOT NULL,
                installed TEXT NOT NULL,
                revoked TEXT NOT NULL DEFAULT '')""",
            """CREATE TABLE credentials (
                id TEXT PRIMARY KEY,
                staff TEXT NOT NULL,
                provider TEXT NOT NULL,
                kind TEXT NOT NULL,
                key_material {blob},
                revoked TEXT NOT NULL DEFAULT '')""",
            """CREATE TABLE orders (
                id {serial},
                customer TEXT NOT NULL REFERENCES customers(id),
                activity TEXT NOT NULL,
                granted_minutes_month INTEGER NOT NULL,
                valid_from TEXT NOT NULL,
                valid_to TEXT NOT NULL,
                double_staffing INTEGER NOT NULL DEFAULT 0,
                tag_exempt INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE mqtt_accounts (
                username TEXT PRIMARY KEY REFERENCES devices(id),
                password_hash TEXT NOT NULL)""",
            # One row per (device, seq). `message` is the exact COSE_Sign1 bytes; the decoded
            # columns are for queries. `chain`: 1 = prev matches the stored predecessor,
            # 0 = broken (RULES.md I4), NULL = predecessor not stored yet.
            """CREATE TABLE events (
                device TEXT NOT NULL,
                seq {bigint} NOT NULL,
                boot {bigint} NOT NULL,
                up {bigint} NOT NULL,
                t {bigint},
                sync {bigint},
                type TEXT NOT NULL,
                cred {blob},
                payload_hash {blob} NOT NULL,
                message {blob} NOT NULL,
                received_at {bigint} NOT NULL,
                chain INTEGER,
                PRIMARY KEY (device, seq)) {clustered}""",
            """CREATE TABLE quarantine (
                id {serial},
                received_at {bigint} NOT NULL,
                source TEXT NOT NULL,
                device TEXT,
                seq {bigint},
                reason TEXT NOT NULL,
                message {blob} NOT NULL)""",
            """CREATE TABLE command_seq (
                device TEXT PRIMARY KEY,
                last_seq {bigint} NOT NULL)""",
            """CREATE TABLE device_state (
                device TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                changed_at {bigint} NOT NULL)""",
        ],
    ),
    (
        2,
        "command outbox: commands for devices, kept until the device's journal shows them",
        [
            # `x` is the command's x map as canonical CBOR (allow/revoke carry byte strings).
            # sent_at: the last time a collector published it; done_at/done_seq: the device's
            # event that shows it obeyed or refused it (outcome says which), or a cancel.
            """CREATE TABLE outbox (
                id {serial},
                device TEXT NOT NULL,
                type TEXT NOT NULL,
                x {blob} NOT NULL,
                queued_at {bigint} NOT NULL,
                sent_at {bigint},
                attempts INTEGER NOT NULL DEFAULT 0,
                done_at {bigint},
                done_seq {bigint},
                outcome TEXT NOT NULL DEFAULT '')""",
            "CREATE INDEX outbox_open ON outbox (done_at, device)",
        ],
    ),
    (
        REVOCATIONS_SINCE,
        "revocations: how far a revoked device's sequence may still reach",
        [
            # A revoked device's key may be in a thief's hands: recorded at revocation, the
            # highest sequence stored and the backlog the device last reported (events in its
            # journal not yet delivered; NULL: unknown) bound what is accepted afterwards
            # (Registry.revoke_device, kvitto.collect.intake). recorded_at: Unix ms.
            """CREATE TABLE revocations (
                device TEXT PRIMARY KEY REFERENCES devices(id),
                recorded_at {bigint} NOT NULL,
                last_seq {bigint} NOT NULL,
                backlog {bigint})""",
            # Devices revoked before this table existed: bounded from now on.
            """INSERT INTO revocations (device, recorded_at, last_seq, backlog)
                SELECT d.id, {now_ms}, COALESCE(MAX(e.seq), 0), NULL
                FROM devices d LEFT JOIN events e ON e.device = d.id
                WHERE d.revoked <> '' GROUP BY d.id""",
        ],
    ),
    (
        4,
        "kvitto serve: providers, users, sessions, claims, plan, people's records, verdicts",
        [
            # A provider [utförare] works in one municipality, whose profile judges it.
            """CREATE TABLE providers (
                id TEXT PRIMARY KEY,
                municipality TEXT NOT NULL)""",
            # Which provider serves a customer (the customer's choice under LOV): the one
            # relation the web's scoping (kvitto.web.scope) follows from a user to data.
            """CREATE TABLE customer_providers (
                customer TEXT PRIMARY KEY REFERENCES customers(id),
                provider TEXT NOT NULL REFERENCES providers(id))""",
            "CREATE INDEX customer_providers_provider ON customer_providers (provider, customer)",
            # Role accounts or pseudonyms, never names. password_hash: Argon2id (argon2-cffi).
            """CREATE TABLE users (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                provider TEXT NOT NULL DEFAULT '',
                municipality TEXT NOT NULL DEFAULT '',
                password_hash TEXT NOT NULL,
                created_at {bigint} NOT NULL,
                disabled INTEGER NOT NULL DEFAULT 0)""",
            # Server-side sessions: the cookie carries a random id (signed), the store its
            # SHA-256, so a logout or idle timeout ends the session for good.
            """CREATE TABLE sessions (
                id_hash TEXT PRIMARY KEY,
                username TEXT NOT NULL REFERENCES users(name),
                created_at {bigint} NOT NULL,
                last_seen {bigint} NOT NULL)""",
            """CREATE TABLE login_failures (
                id {serial},
                username TEXT NOT NULL,
                at {bigint} NOT NULL)""",
            "CREATE INDEX login_failures_user ON login_failures (username, at)",
            # The provider's claims as imported (claims.csv rows, FORMATS.md §3), never
            # changed afterwards: corrections are records on top of them.
            """CREATE TABLE claims (
                provider TEXT NOT NULL,
                claim_id TEXT NOT NULL,
                customer TEXT NOT NULL,
                month TEXT NOT NULL,
                start_at {bigint} NOT NULL,
                end_at {bigint} NOT NULL,
                via TEXT NOT NULL,
                fields TEXT NOT NULL,
                imported_at {bigint} NOT NULL,
                PRIMARY KEY (provider, claim_id))""",
            "CREATE INDEX claims_month ON claims (provider, month, customer)",
            # the day board: does this customer have claims, planned visits that day?
            "CREATE INDEX claims_day ON claims (provider, customer, start_at)",
            # Claims and manual claims per provider and month, kept by the import: a month
            # page must not count a million rows.
            """CREATE TABLE claim_counts (
                provider TEXT NOT NULL,
                month TEXT NOT NULL,
                claims {bigint} NOT NULL,
                manual {bigint} NOT NULL,
                PRIMARY KEY (provider, month))""",
            # A customer's devices, for the evidence of one visit.
            "CREATE INDEX devices_customer ON devices (customer)",
            # The day board and a visit's timeline read one customer's devices by time.
            "CREATE INDEX events_time ON events (device, t)",
            # The live day board asks for events received since its last look.
            "CREATE INDEX events_received ON events (received_at)",
            # Planned visits from the provider's planning system (docs/formats.md, plan.csv).
            """CREATE TABLE plan (
                id {serial},
                provider TEXT NOT NULL,
                customer TEXT NOT NULL,
                start_at {bigint} NOT NULL,
                end_at {bigint} NOT NULL,
                activities TEXT NOT NULL,
                imported_at {bigint} NOT NULL)""",
            "CREATE INDEX plan_day ON plan (provider, start_at)",
            "CREATE INDEX plan_customer ON plan (provider, customer, start_at)",
            # People's actions (DESIGN.md): append-only, hash-chained per chain (a provider,
            # a municipality or the admins), never updated or deleted.
            """CREATE TABLE records (
                chain TEXT NOT NULL,
                seq {bigint} NOT NULL,
                at {bigint} NOT NULL,
                actor TEXT NOT NULL,
                kind TEXT NOT NULL,
                provider TEXT NOT NULL DEFAULT '',
                municipality TEXT NOT NULL DEFAULT '',
                customer TEXT NOT NULL DEFAULT '',
                claim_id TEXT NOT NULL DEFAULT '',
                month TEXT NOT NULL DEFAULT '',
                body TEXT NOT NULL,
                prev {blob} NOT NULL,
                hash {blob} NOT NULL,
                PRIMARY KEY (chain, seq))""",
            "CREATE INDEX records_claim ON records (provider, month, customer)",
            # Derived, rebuilt by every judgement: the verdict of the rules on the claims as
            # corrected (kvitto.web.judge).
            """CREATE TABLE verdicts (
                provider TEXT NOT NULL,
                month TEXT NOT NULL,
                customer TEXT NOT NULL,
                claim_id TEXT NOT NULL,
                rule TEXT NOT NULL,
                outcome TEXT NOT NULL,
                payable_minutes INTEGER NOT NULL,
                reason TEXT NOT NULL,
                activity TEXT NOT NULL,
                staff TEXT NOT NULL,
                start_at {bigint} NOT NULL,
                end_at {bigint} NOT NULL,
                deadline_rule TEXT NOT NULL,
                deadline_at {bigint} NOT NULL)""",
            "CREATE INDEX verdicts_month ON verdicts (provider, month, customer)",
            "CREATE INDEX verdicts_deadline ON verdicts (provider, deadline_at)",
            "CREATE INDEX verdicts_rule ON verdicts (provider, month, rule, outcome)",
            """CREATE TABLE billing (
                provider TEXT NOT NULL,
                month TEXT NOT NULL,
                customer TEXT NOT NULL,
                category TEXT NOT NULL,
                payable_minutes INTEGER NOT NULL,
                count INTEGER NOT NULL)""",
            "CREATE INDEX billing_month ON billing (provider, month, customer)",
            """CREATE TABLE judged (
                provider TEXT NOT NULL,
                month TEXT NOT NULL,
                judged_at {bigint} NOT NULL,
                counts TEXT NOT NULL,
                PRIMARY KEY (provider, month))""",
        ],
    ),
    (
        5,
        "staff phones without an app: passkeys, enrolment links, stickers, door reads and proofs",
        [
            # A passkey (WebAuthn) of a `phone` credential in `credentials`: its COSE public key
            # (credential id = SHA-256 of it, first 16 bytes), the authenticator's own id.
            """CREATE TABLE passkeys (
                credential TEXT PRIMARY KEY,
                raw_id TEXT NOT NULL UNIQUE,
                public_key {blob} NOT NULL,
                sign_count {bigint} NOT NULL,
                enrolled_at {bigint} NOT NULL)""",
            # One-time enrolment links a coordinator made: the SHA-256 of the token only.
            """CREATE TABLE enrolments (
                token_hash TEXT PRIMARY KEY,
                provider TEXT NOT NULL,
                staff TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at {bigint} NOT NULL,
                expires_at {bigint} NOT NULL,
                challenge {blob} NOT NULL,
                used_at {bigint})""",
            # A passive NTAG 424 DNA sticker at a customer's door, with its own SDM keys.
            """CREATE TABLE stickers (
                id TEXT PRIMARY KEY,
                customer TEXT NOT NULL REFERENCES customers(id),
                meta_key {blob} NOT NULL,
                file_key {blob} NOT NULL,
                installed TEXT NOT NULL,
                revoked TEXT NOT NULL DEFAULT '')""",
            # Every door URL a phone opened that verified: the counter only grows per door.
            """CREATE TABLE door_reads (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                door TEXT NOT NULL,
                customer TEXT NOT NULL,
                counter {bigint} NOT NULL,
                device_time {bigint},
                url TEXT NOT NULL,
                read_at {bigint} NOT NULL,
                UNIQUE (kind, door, counter))""",
            # A door read confirmed by a passkey: arrive or depart, with what re-checks it.
            """CREATE TABLE door_proofs (
                id {serial},
                read_id TEXT NOT NULL UNIQUE,
                provider TEXT NOT NULL,
                customer TEXT NOT NULL,
                credential TEXT NOT NULL,
                action TEXT NOT NULL,
                at {bigint} NOT NULL,
                proof TEXT NOT NULL)""",
            "CREATE INDEX door_proofs_open ON door_proofs (credential, customer, at)",
            "CREATE INDEX door_proofs_month ON door_proofs (provider, at)",
        ],
    ),
    (
        6,
        "incremental verdicts: which customer-months changed, and what was judged from them",
        [
            # Every new event, claim, correction, decision or door proof bumps its customer-
            # months' version (kvitto.store.stale.touch); `claims`: the version at which its
            # claims last changed (not evidence: a staff member's other customers need judging
            # again only then); `day` is the last day touched.
            """CREATE TABLE touched (
                customer TEXT NOT NULL,
                month TEXT NOT NULL,
                version {bigint} NOT NULL,
                claims {bigint} NOT NULL,
                day TEXT NOT NULL,
                PRIMARY KEY (customer, month))""",
            # What a judge kept per customer-month: the touched version it read (stale while
            # `touched` is ahead), the staff in the customer's claims then (T2 links customers
            # through them), a digest of inputs that live outside the store (a claims file),
            # and for `kvitto verify` its findings and billing rows as JSON. scope: "web:"
            # and the provider (whose verdicts table holds the findings), or "verify:" and the
            # profile.
            """CREATE TABLE kept (
                scope TEXT NOT NULL,
                month TEXT NOT NULL,
                customer TEXT NOT NULL,
                version {bigint} NOT NULL,
                staff TEXT NOT NULL,
                inputs TEXT NOT NULL DEFAULT '',
                findings TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (scope, month, customer))""",
        ],
    ),
    (
        7,
        "shared entrance locks (building, customers); the provider on alarm duty",
        [
            # issue #23: a lock at a block's main entrance serves several customers. Its
            # devices.customer is the first of them (the column references customers); the
            # building and the whole list are here, and readers take the list (store.registry).
            "ALTER TABLE devices ADD COLUMN building TEXT NOT NULL DEFAULT ''",
            """CREATE TABLE device_customers (
                device TEXT NOT NULL REFERENCES devices(id),
                customer TEXT NOT NULL REFERENCES customers(id),
                PRIMARY KEY (device, customer))""",
            # issue #23: while a customer's alarm is open, the locks of the customer open for
            # the credentials of the provider on alarm duty in the municipality (the
            # customer's provider's) (kvitto.collect.alarm_access)
            "ALTER TABLE providers ADD COLUMN alarm_duty INTEGER NOT NULL DEFAULT 0",
        ],
    ),
    (
        8,
        "the deviation queue's deadlines as time passes: whether a verdict's is its claim's last",
        [
            # issue #19: verdicts.deadline_at is the claim's nearest deadline as of the
            # judgement. Once it passes, the queue moves it on to the claim's next one
            # (kvitto.web.judge.refresh_deadlines) until it is the last (deadline_last = 1), so
            # the queue's order is the order of the deadlines it shows. Rows judged before
            # this version start at 0: the queue moves each on once.
            "ALTER TABLE verdicts ADD COLUMN deadline_last INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX verdicts_due ON verdicts (provider, deadline_last, deadline_at)",
        ],
    ),
]

"""The evidence store: SQLite (WAL) by default, PostgreSQL by URL, the same schema in both.

    store = open_store("sqlite:///var/lib/kvitto/kvitto.db")   # or "postgresql://host/kvitto"
    inserted = store.insert_events([row, ...])                 # (device, seq) stored once
    store.close()

The schema is created and upgraded by numbered migrations (`MIGRATIONS` in
kvitto.store.migrations); `schema_version` records which ran. Each (device, seq) is stored once
by a primary key and INSERT … ON CONFLICT DO NOTHING, never by reading first, so several
collectors can write to one PostgreSQL at once.
Rejected messages go to `quarantine` with the reason; nothing is dropped silently.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kvitto.errors import KvittoError
from kvitto.store.migrations import MIGRATIONS, TYPES


@dataclass(frozen=True)
class EventRow:
    """A verified event as stored. `received_at` is the collector's clock, Unix milliseconds."""

    device: str
    seq: int
    boot: int
    up: int
    t: int | None
    sync: int | None
    type: str
    cred: bytes | None
    payload_hash: bytes
    message: bytes
    received_at: int
    prev: bytes | None = None  # decoded `prev` for the chain check; not a column (in message)


@dataclass(frozen=True)
class OutboxRow:
    """A command queued for a device (`kvitto command`); the collector sends it while it is
    open. Times are Unix milliseconds."""

    id: int
    device: str
    type: str
    x: dict[str, Any]
    queued_at: int
    sent_at: int | None
    attempts: int
    done_at: int | None
    done_seq: int | None
    outcome: str

    @property
    def state(self) -> str:
        if self.done_at is not None:
            return self.outcome.split(" ", 1)[0].rstrip(":") or "done"  # applied, refused, …
        return "sent" if self.sent_at is not None else "queued"


@dataclass(frozen=True)
class QuarantineRow:
    """A rejected message, kept whole with the reason (source: topic or file and item)."""

    received_at: int
    source: str
    device: str | None
    seq: int | None
    reason: str
    message: bytes


_EVENT_COLUMNS = (
    "device, seq, boot, up, t, sync, type, cred, payload_hash, message, received_at, chain"
)


class Store:
    """One database connection, used under a lock; SQL is written with `?` placeholders."""

    def __init__(self, url: str, dialect: str, connection: Any):
        self.url = url
        self.dialect = dialect
        self._connection = connection
        self._lock = threading.RLock()
        self._in_transaction = False

    # -- plumbing -------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (empty for statements without rows)."""
        with self._lock:
            cursor = self._connection.execute(self._sql(sql), tuple(params))
            if cursor.description is None:
                return []
            return [tuple(row) for row in cursor.fetchall()]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.executemany(self._sql(sql), [tuple(row) for row in rows])

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """All statements inside commit together or not at all (nested calls join the outer)."""
        with self._lock:
            if self._in_transaction:
                yield self
                return
            self._in_transaction = True
            try:
                if self.dialect == "sqlite":
                    # IMMEDIATE takes the write lock up front: no upgrade deadlock between
                    # two processes that both read first.
                    self._connection.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                    except BaseException:
                        self._connection.execute("ROLLBACK")
                        raise
                    self._connection.execute("COMMIT")
                else:
                    with self._connection.transaction():
                        yield self
            finally:
                self._in_transaction = False

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    def is_retryable(self, error: BaseException) -> bool:
        """A conflict between concurrent writers that a retry of the transaction resolves."""
        if self.dialect == "postgresql":
            sqlstate = getattr(error, "sqlstate", None)
            return sqlstate in ("40001", "40P01")  # serialization failure, deadlock
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        rows = self.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, each in its own transaction."""
        with self.transaction():
            if self.dialect == "postgresql":
                # Two collectors starting at once: one creates and migrates, the other waits.
                self.execute("SELECT pg_advisory_xact_lock(7462001)")
            self.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        applied: list[int] = []
        for version, description, statements in MIGRATIONS:
            with self.transaction():
                if self.dialect == "postgresql":
                    self.execute("SELECT pg_advisory_xact_lock(7462001)")
                done = self.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,))
                if done:
                    continue
                for statement in statements:
                    self.execute(statement.format(**TYPES[self.dialect]))
                self.execute(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (version, description, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                )
                applied.append(version)
        return applied

    # -- events ---------------------------------------------------------------------------

    def insert_events(
        self,
        rows: Sequence[EventRow],
        chain: Sequence[bool | None] | None = None,
        stored: Container[tuple[str, int]] | None = None,
    ) -> list[bool]:
        """Store each row unless its (device, seq) is already there; True where this call
        inserted it. The primary key decides, so concurrent writers never double a row.
        `chain`, beside the rows, is each one's link status where the caller knows it already
        (else NULL, as set_chain leaves a link it cannot check). `stored`: the rows' keys
        the caller found stored in this same transaction; SQLite, whose transaction holds the
        only write lock, then inserts the others without a savepoint to fall back to (the
        savepoint's page copies cost a third of the insert)."""
        if not rows:
            return []
        if stored is not None and self.dialect == "sqlite" and self._in_transaction:
            return self._insert_new_events(rows, chain, stored)
        sql = self._sql(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (device, seq) DO NOTHING"
        )
        links = chain if chain is not None else [None] * len(rows)
        values = [
            (
                r.device, r.seq, r.boot, r.up, r.t, r.sync, r.type, r.cred,
                r.payload_hash, r.message, r.received_at, None if ok is None else int(ok),
            )
            for r, ok in zip(rows, links)
        ]  # fmt: skip
        with self._lock:
            if self.dialect == "sqlite":
                connection = self._connection
                # Fast path: all new (the usual case), one executemany. If the count of
                # changes says some existed, undo to the savepoint and ask row by row.
                connection.execute("SAVEPOINT insert_events")
                before = connection.total_changes
                connection.executemany(sql, values)
                if connection.total_changes - before == len(values):
                    connection.execute("RELEASE insert_events")
                    return [True] * len(values)
                connection.execute("ROLLBACK TO insert_events")
                execute = connection.execute
                inserted = [execute(sql, value).rowcount == 1 for value in values]
                connection.execute("RELEASE insert_events")
                return inserted
            cursor = self._connection.cursor()
            cursor.executemany(sql + " RETURNING 1", values, returning=True)
            inserted: list[bool] = []
            while True:
                inserted.append(cursor.fetchone() is not None)
                if not cursor.nextset():
                    break
            return inserted

    def _insert_new_events(
        self,
        rows: Sequence[EventRow],
        chain: Sequence[bool | None] | None,
        stored: Container[tuple[str, int]],
    ) -> list[bool]:
        sql = (
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (device, seq) DO NOTHING"
        )
        links = chain if chain is not None else [None] * len(rows)
        inserted: list[bool] = []
        seen: set[tuple[str, int]] = set()
        values = []
        for r, ok in zip(rows, links):
            key = (r.device, r.seq)
            new = key not in stored and key not in seen
            inserted.append(new)
            if new:
                seen.add(key)
                values.append(
                    (
                        r.device, r.seq, r.boot, r.up, r.t, r.sync, r.type, r.cred,
                        r.payload_hash, r.message, r.received_at, None if ok is None else int(ok),
                    )
                )  # fmt: skip
        with self._lock:
            before = self._connection.total_changes
            self._connection.executemany(sql, values)
            if self._connection.total_changes - before != len(values):
                # Only another writer could have added rows, and the transaction excludes one.
                raise KvittoError(f"{self.url}: events appeared inside a write transaction")
        return inserted

    def stored_hashes(self, device: str, seqs: Iterable[int]) -> dict[int, bytes]:
        """payload_hash of the stored events among `seqs` of one device."""
        wanted = sorted(set(seqs))
        found: dict[int, bytes] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for seq, digest in self.execute(
                f"SELECT seq, payload_hash FROM events WHERE device = ? AND seq IN ({marks})",
                (device, *chunk),
            ):
                found[int(seq)] = bytes(digest)
        return found

    def stored_hashes_in(
        self, spans: Iterable[tuple[str, int, int]]
    ) -> dict[tuple[str, int], bytes]:
        """payload_hash of the stored events in (device, first, last) ranges of any devices:
        one query per 300 ranges (a join on the primary key), where stored_hashes asks one
        device at a time."""
        wanted = sorted(set(spans))
        found: dict[tuple[str, int], bytes] = {}
        for start in range(0, len(wanted), 300):
            chunk = wanted[start : start + 300]
            marks = ", ".join(["(?, CAST(? AS BIGINT), CAST(? AS BIGINT))"] * len(chunk))
            for device, seq, digest in self.execute(
                f"WITH wanted (device, first, last) AS (VALUES {marks}) "
                "SELECT e.device, e.seq, e.payload_hash FROM wanted JOIN events e "
                "ON e.device = wanted.device AND e.seq BETWEEN wanted.first AND wanted.last",
                [value for span in chunk for value in span],
            ):
                found[(device, int(seq))] = bytes(digest)
        return found

    def stored_messages(self, device: str, seqs: Iterable[int]) -> dict[int, bytes]:
        wanted = sorted(set(seqs))
        found: dict[int, bytes] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for seq, message in self.execute(
                f"SELECT seq, message FROM events WHERE device = ? AND seq IN ({marks})",
                (device, *chunk),
            ):
                found[int(seq)] = bytes(message)
        return found

    def set_chain(self, device: str, statuses: dict[int, bool]) -> None:
        self.executemany(
            "UPDATE events SET chain = ? WHERE device = ? AND seq = ?",
            [(1 if ok else 0, device, seq) for seq, ok in statuses.items()],
        )

    def seqs_after(self, device: str, after: int, limit: int = 10000) -> list[int]:
        rows = self.execute(
            "SELECT seq FROM events WHERE device = ? AND seq > ? ORDER BY seq LIMIT ?",
            (device, after, limit),
        )
        return [int(row[0]) for row in rows]

    def event_count(self, device: str | None = None) -> int:
        if device is None:
            return int(self.execute("SELECT COUNT(*) FROM events")[0][0])
        return int(self.execute("SELECT COUNT(*) FROM events WHERE device = ?", (device,))[0][0])

    def events(
        self, device: str | None = None, received_since: int | None = None
    ) -> list[tuple[Any, ...]]:
        """(device, seq, type, t, received_at, chain, message) in device and seq order.

        `received_since` (Unix ms): per device, from the lowest sequence received from then on
        (a gap resent late brings its neighbours along, so the chain stays whole)."""
        conditions: list[str] = []
        params: list[Any] = []
        if device:
            conditions.append("e.device = ?")
            params.append(device)
        if received_since is not None:
            conditions.append(
                "e.seq >= (SELECT MIN(w.seq) FROM events w "
                "WHERE w.device = e.device AND w.received_at >= ?)"
            )
            params.append(received_since)
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        return self.execute(
            "SELECT e.device, e.seq, e.type, e.t, e.received_at, e.chain, e.message "
            f"FROM events e {where}ORDER BY e.device, e.seq",
            tuple(params),
        )

    # -- quarantine -----------------------------------------------------------------------

    def quarantine(self, rows: Sequence[QuarantineRow]) -> None:
        self.executemany(
            "INSERT INTO quarantine (received_at, source, device, seq, reason, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(r.received_at, r.source, r.device, r.seq, r.reason, r.message) for r in rows],
        )

    def quarantined(self) -> list[tuple[Any, ...]]:
        """(source, device, seq, reason, message) in arrival order."""
        return self.execute(
            "SELECT source, device, seq, reason, message FROM quarantine ORDER BY id"
        )

    def quarantine_rows(
        self, device: str | None = None, limit: int | None = None
    ) -> list[tuple[Any, ...]]:
        """(id, received_at, source, device, seq, reason, message), the newest `limit` (all if
        None) in arrival order; `device`: only those the message named."""
        where = "WHERE device = ? " if device is not None else ""
        params: list[Any] = [device] if device is not None else []
        tail = ""
        if limit is not None:
            tail = " LIMIT ?"
            params.append(limit)
        rows = self.execute(
            "SELECT id, received_at, source, device, seq, reason, message FROM quarantine "
            f"{where}ORDER BY id DESC{tail}",
            tuple(params),
        )
        return rows[::-1]

    # -- revocations ----------------------------------------------------------------------

    def record_revocation(self, device: str, recorded_at: int, backlog: int | None) -> None:
        """Note the device's highest stored sequence now and the backlog it last reported
        (once: the first record stands)."""
        self.execute(
            "INSERT INTO revocations (device, recorded_at, last_seq, backlog) "
            "SELECT ?, ?, COALESCE(MAX(seq), 0), ? FROM events WHERE device = ? "
            "ON CONFLICT (device) DO NOTHING",
            (device, recorded_at, backlog, device),
        )

    def revocations(self) -> dict[str, tuple[int, int, int | None]]:
        """device -> (recorded_at ms, last stored seq, reported backlog or None)."""
        rows = self.execute("SELECT device, recorded_at, last_seq, backlog FROM revocations")
        return {
            row[0]: (int(row[1]), int(row[2]), None if row[3] is None else int(row[3]))
            for row in rows
        }

    # -- commands and device state --------------------------------------------------------

    def next_command_seq(self, device: str, now_ms: int | None = None) -> int:
        """The next command sequence for `device`: above every one issued before, and at least
        the current Unix milliseconds, so it keeps rising even if this store were replaced."""
        floor = int(time.time() * 1000) if now_ms is None else now_ms
        rows = self.execute(
            "INSERT INTO command_seq (device, last_seq) VALUES (?, ?) "
            "ON CONFLICT (device) DO UPDATE SET last_seq = CASE "
            "WHEN command_seq.last_seq + 1 > excluded.last_seq THEN command_seq.last_seq + 1 "
            "ELSE excluded.last_seq END RETURNING last_seq",
            (device, floor),
        )
        return int(rows[0][0])

    # -- the command outbox ---------------------------------------------------------------

    def queue_command(self, device: str, command_type: str, x: dict[str, Any], at: int) -> int:
        """Add a command for `device` to the outbox; its id."""
        import cbor2

        rows = self.execute(
            "INSERT INTO outbox (device, type, x, queued_at) VALUES (?, ?, ?, ?) RETURNING id",
            (device, command_type, cbor2.dumps(x, canonical=True), at),
        )
        return int(rows[0][0])

    def outbox(self, open_only: bool = False, device: str | None = None) -> list[OutboxRow]:
        """The outbox in the order commands were queued; `open_only`: not yet done."""
        import cbor2

        conditions = ["done_at IS NULL"] if open_only else []
        params: list[Any] = []
        if device is not None:
            conditions.append("device = ?")
            params.append(device)
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        rows = self.execute(
            "SELECT id, device, type, x, queued_at, sent_at, attempts, done_at, done_seq, outcome "
            f"FROM outbox {where}ORDER BY id",
            tuple(params),
        )
        return [
            OutboxRow(int(r[0]), r[1], r[2], cbor2.loads(bytes(r[3])), *r[4:])  # type: ignore[arg-type]
            for r in rows
        ]

    def command_sent(self, command_id: int, at: int, previous: int | None) -> bool:
        """Record a send; False if another collector sent it since `previous` (its sent_at as
        read), so that collectors sharing a store send each attempt once."""
        rows = self.execute(
            "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 "
            "WHERE id = ? AND done_at IS NULL AND "
            + ("sent_at IS NULL" if previous is None else "sent_at = ?")
            + " RETURNING id",
            (at, command_id) if previous is None else (at, command_id, previous),
        )
        return bool(rows)

    def command_done(self, command_id: int, at: int, outcome: str, seq: int | None) -> bool:
        """Close an open command; False if it was closed already (by another collector)."""
        rows = self.execute(
            "UPDATE outbox SET done_at = ?, outcome = ?, done_seq = ? "
            "WHERE id = ? AND done_at IS NULL RETURNING id",
            (at, outcome, seq, command_id),
        )
        return bool(rows)

    def set_device_state(self, device: str, state: str, changed_at: int) -> None:
        self.execute(
            "INSERT INTO device_state (device, state, changed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET state = excluded.state, "
            "changed_at = excluded.changed_at",
            (device, state, changed_at),
        )

    def device_states(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self.execute("SELECT device, state FROM device_state")}

    def online_since(self) -> dict[str, int]:
        """Unix ms each device online now last came online."""
        rows = self.execute("SELECT device, changed_at FROM device_state WHERE state = 'online'")
        return {row[0]: int(row[1]) for row in rows}


def open_store(url: str, *, migrate: bool = True, create: bool = True) -> Store:
    """Open (and by default create or upgrade) the store named by `url`.

    sqlite:///relative/or/absolute/path.db (sqlite:////abs works too), or postgresql://…
    With `create=False` a store that does not exist yet (no file, or no kvitto tables) is a
    KvittoError: commands that only read or add to a store use it, so a misspelled URL is
    refused instead of answering from a new, empty store.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db, so that
        # f"sqlite:///{path}" names `path` whether it is relative or absolute.
        raw = url[len("sqlite://") :]
        raw = raw[1:] if raw.startswith("/") else raw
        if not raw:
            raise KvittoError(f"store URL {url!r} names no file (sqlite:///path/to/kvitto.db)")
        path = Path(raw) if raw != ":memory:" else None
        if path is not None and not path.parent.exists():
            raise KvittoError(f"store URL {url!r}: folder {path.parent} does not exist")
        if path is not None and not create and not path.exists():
            raise KvittoError(_NO_STORE.format(url=url, what=f"{path} does not exist"))
        connection = None
        for attempt in range(100):
            try:
                connection = sqlite3.connect(
                    raw, isolation_level=None, check_same_thread=False, timeout=30
                )
                # Switching a new file to WAL needs an exclusive lock and SQLite answers
                # "locked" at once, without its busy handler, while another process starting
                # at the same moment holds one: retry briefly (collectors starting together).
                connection.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk before the collector acknowledges it to the device,
                # which then frees its journal (DESIGN.md, Reliability).
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute("PRAGMA foreign_keys=ON")
                connection.execute("PRAGMA busy_timeout=30000")
                break
            except sqlite3.OperationalError as error:
                if connection is not None:
                    connection.close()
                    connection = None
                if "locked" not in str(error) or attempt == 99:
                    raise KvittoError(f"store {url!r}: {error}") from None
                time.sleep(0.05)
            except sqlite3.Error as error:
                raise KvittoError(f"store {url!r}: {error}") from None
        assert connection is not None  # the loop breaks with one or raises
        store = Store(url, "sqlite", connection)
    elif parsed.scheme in ("postgresql", "postgres"):
        try:
            import psycopg
        except ImportError:
            raise KvittoError(
                "a postgresql:// store needs psycopg 3: pip install 'kvitto[postgres]'"
            ) from None
        try:
            connection = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise KvittoError(f"store {parsed.hostname or url}: {error}") from None
        store = Store(url, "postgresql", connection)
    else:
        raise KvittoError(
            f"store URL {url!r}: use sqlite:///path/to/kvitto.db or postgresql://host/db"
        )
    if not create and not store.execute(_HAS_SCHEMA[store.dialect]):
        store.close()
        raise KvittoError(_NO_STORE.format(url=url, what="it holds no kvitto store"))
    if migrate:
        store.migrate()
    return store


_NO_STORE = (
    "store {url!r}: {what} (a typo? `kvitto init --store {url}` creates a new store; "
    "`kvitto collect` and `kvitto demo` create one too)"
)
_HAS_SCHEMA = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
    "postgresql": "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version'",
}

# pingjia.bridge.store: the bridge's one SQLite file (sqlite-utils over WAL) and its migrations.
#
# `Store(path)` opens nothing by itself; `store.connect()` hands out a new
# connection (WAL, busy timeout, foreign keys, autocommit mode so callers write
# `BEGIN IMMEDIATE ... COMMIT` themselves through `transaction()`). Every thread
# that writes uses its own connection; the hub's writer thread owns one.
# `migrate()` applies bridge/migrations.py in order, each in its own
# transaction, recording names in `migrations` (idempotent, append-only).
import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

import sqlite_utils

from . import migrations

log = logging.getLogger("pingjia.bridge.store")

BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """The database file cannot be opened or migrated."""


def is_transient(exc):
    """True for errors a retry may cure: locked/busy database, disk or DB full, I/O."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    msg = str(exc).lower()
    return any(s in msg for s in ("locked", "busy", "full", "disk i/o", "unable to open"))


class Store:
    """One SQLite file. Thread-safe in the sense that each caller gets its own connection."""

    def __init__(self, path, busy_timeout_ms=BUSY_TIMEOUT_MS):
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms

    def connect(self, readonly=False):
        """A new sqlite3 connection (rows as sqlite3.Row, autocommit; use transaction())."""
        if readonly:
            conn = sqlite3.connect("file:%s?mode=ro" % Path(self.path).resolve(), uri=True,
                                   isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_ms / 1000)
        else:
            parent = Path(self.path).parent
            if not parent.exists():
                parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_ms / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = %d" % int(self.busy_timeout_ms))
        self._match_owner()
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA synchronous = FULL")  # WAL + FULL: a COMMIT is on disk before we ACK (one fsync per batch)
        return conn

    def _match_owner(self):
        """Run as root (`sudo pingjia status`), SQLite may create the -wal/-shm files owned by root,
        and the service user could then no longer open its own database: give them the file's owner."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return
        try:
            st = os.stat(self.path)
            if st.st_uid == 0:
                return
            for suffix in ("-wal", "-shm", "-journal"):
                side = self.path + suffix
                if os.path.exists(side) and os.stat(side).st_uid == 0:
                    os.chown(side, st.st_uid, st.st_gid)
        except OSError:
            pass

    def db(self, conn=None):
        """A sqlite_utils.Database over `conn` (or a new connection)."""
        return sqlite_utils.Database(conn or self.connect())

    def links_unknown(self):
        """Mark every keypad offline: at start and after a stop this bridge holds no link,
        so it cannot vouch for any. A keypad is online again as soon as it is heard
        (serial frame, MQTT retained state). Returns how many were marked."""
        conn = self.connect()
        try:
            return conn.execute("UPDATE devices SET online = 0 WHERE online = 1").rowcount
        finally:
            conn.close()

    def migrate(self):
        """Create the file if needed, switch to WAL, apply pending migrations. Returns applied names."""
        try:
            conn = self.connect()
        except sqlite3.Error as e:
            raise StoreError("cannot open database %s: %s" % (self.path, e)) from e
        try:
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
            done = {r[0] for r in conn.execute("SELECT name FROM migrations")}
            applied = []
            for name, sql in migrations.MIGRATIONS:
                if name in done:
                    continue
                with transaction(conn):
                    for stmt in _statements(sql):
                        conn.execute(stmt)
                    conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
                applied.append(name)
                log.info("migration applied name=%s db=%s", name, self.path)
            return applied
        except sqlite3.Error as e:
            raise StoreError("cannot migrate database %s: %s" % (self.path, e)) from e
        finally:
            conn.close()

    def exists(self):
        return os.path.exists(self.path)


def _statements(sql):
    """Split a migration script into statements (executescript would commit on its own)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf)
            buf = ""
    if buf.strip():
        out.append(buf)
    return out


@contextlib.contextmanager
def transaction(conn, immediate=True):
    """BEGIN [IMMEDIATE] ... COMMIT, ROLLBACK on any error (the error propagates)."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def rows(conn, sql, params=()):
    """Query -> list of dicts."""
    return [dict(r) for r in conn.execute(sql, params)]


def row(conn, sql, params=()):
    r = conn.execute(sql, params).fetchone()
    return dict(r) if r is not None else None


def audit(conn, at, actor, action, subject="", detail=""):
    conn.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?,?,?,?,?)",
                 (at, actor, action, subject, detail))

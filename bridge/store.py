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
import threading
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

    def migrate(self, before=None):
        """Create the file if needed, switch to WAL, apply pending migrations. Returns applied names.
        `before(name)` is called before each pending one (an index over years of a hall's rows takes
        a while: the service tells systemd, so its start timeout does not kill it midway)."""
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
                if before is not None:
                    before(name)
                log.info("migration started name=%s db=%s", name, self.path)
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

    def backup(self, dest):
        """Copy the database to `dest` (which must not exist) while the bridge keeps running: SQLite's
        online backup in one step, i.e. one read transaction, so the copy is one committed state (in
        WAL mode a reader never blocks the writer; a step-by-step copy would start over after every
        commit of a busy bridge). Written as `dest`.part, checked, then renamed: a failed or cut
        backup never leaves a half copy under the name. The copy is a single file (rollback journal
        mode, no -wal beside it). Returns {"bytes", "migrations", "seconds"}; StoreError with
        the reason otherwise. Nothing here migrates: a backup before an upgrade is of the old schema."""
        dest = str(dest)
        if not self.exists():
            raise StoreError("database %s does not exist" % self.path)
        if os.path.exists(dest):
            raise StoreError("%s exists already: choose a new name (a backup never overwrites)" % dest)
        part, t0 = dest + ".part", time.monotonic()
        src = dst = None
        try:
            src = self.connect(readonly=True)
            dst = sqlite3.connect(part, isolation_level=None)
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError("the copy failed its check: %s" % check)
            names = [r[0] for r in dst.execute("SELECT name FROM migrations ORDER BY rowid")]
            dst.close()
            dst = None
            os.replace(part, dest)
            fd = os.open(os.path.dirname(os.path.abspath(dest)), os.O_RDONLY)  # the new name on disk too
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except (sqlite3.Error, OSError) as e:
            raise StoreError("backup of %s to %s failed: %s" % (self.path, dest, e)) from e
        finally:
            for c in (src, dst):
                if c is not None:
                    c.close()
            if os.path.exists(part):
                os.remove(part)
        return {"bytes": os.path.getsize(dest), "migrations": names,
                "seconds": time.monotonic() - t0}


class Checkpointer:
    """Copies committed WAL frames back into the database file from its own thread and connection
    (PRAGMA wal_checkpoint(PASSIVE) every `interval_s`), so the hub writer's COMMITs don't have to.
    SQLite's automatic checkpoint runs inside the COMMIT that crosses its limit: under load that
    COMMIT, and every ACK waiting for it, would also copy megabytes and fsync the file. PASSIVE never
    waits for readers or the writer; the writer keeps a higher automatic limit as a backstop in case
    this thread falls behind (bridge/writer.py). Once all frames are copied, the writer's next
    transaction starts the WAL from its beginning again, so the file stays bounded."""

    def __init__(self, store, interval_s=1.0):
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = None
        self._failing = None
        self.checkpoints = 0

    def start(self):
        self._thread = threading.Thread(target=self._run, name="hub-checkpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self):
        conn = None
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    if conn is None:
                        conn = self.store.connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                    if self._failing is not None:
                        log.info("checkpoint recovered after_error=%r", self._failing)
                        self._failing = None
                except sqlite3.Error as e:  # a full disk, say: the writer reports it too; retried next interval
                    if self._failing is None:
                        log.error("checkpoint failed, retrying every %ss error=%r", self.interval_s, str(e))
                    self._failing = str(e)
        finally:
            if conn is not None:
                conn.close()


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


def select_in(conn, sql, keys, chunk=400):
    """Rows of `sql` for many keys: its one `%s` becomes the keys' placeholders, `?,?,...` for
    scalars, `(?,?),...` for tuples (a `WITH v(a, b) AS (VALUES %s)` join), in chunks of `chunk`
    keys per statement. Yields the rows."""
    keys = list(keys)
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        if isinstance(part[0], tuple):
            one = "(%s)" % ",".join("?" * len(part[0]))
            params = [x for k in part for x in k]
        else:
            one, params = "?", part
        yield from conn.execute(sql % ",".join([one] * len(part)), params)


def rows(conn, sql, params=()):
    """Query -> list of dicts."""
    return [dict(r) for r in conn.execute(sql, params)]


def row(conn, sql, params=()):
    r = conn.execute(sql, params).fetchone()
    return dict(r) if r is not None else None


def audit(conn, at, actor, action, subject="", detail=""):
    conn.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?,?,?,?,?)",
                 (at, actor, action, subject, detail))

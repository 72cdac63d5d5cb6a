# pingjia.bridge.devices: keypads, their keys and which window each one serves.
#
# Functions take a sqlite3 connection (autocommit, as Store.connect() gives, or
# a plain sqlite3 connection in its default mode) and do their work in one
# transaction. Keys are 32 random bytes, stored hex in devices.key_hex and
# never written to a log or the audit table. The `bindings` table keeps the
# history: one row per (device, window) period, closed by unbound_at, so a
# replaced unit's ratings stay attributable to the window it served.
import contextlib
import os
import sqlite3
import time

from ..protocol.messages import _check_device_id  # same rule as the wire
from ..protocol.errors import ProtocolError
from ..protocol.auth import KEY_LEN
from .store import audit

TRANSPORTS = ("serial", "mqtt")


class DeviceError(ValueError):
    """A device operation that cannot be done (unknown id, wrong state); message says why."""


def new_key():
    return os.urandom(KEY_LEN)


@contextlib.contextmanager
def _tx(conn):
    if conn.isolation_level is None:  # autocommit connection (Store.connect)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    else:
        with conn:
            yield


def _device(conn, device_id):
    r = conn.execute("SELECT device_id, window_id, retired_at FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if r is None:
        raise DeviceError("unknown device %s" % device_id)
    return r


def _check_window(conn, window_id):
    if conn.execute("SELECT 1 FROM windows WHERE window_id = ?", (window_id,)).fetchone() is None:
        raise DeviceError("unknown window %s (add it first: pingjia windows add)" % window_id)


def add_window(conn, window_id, name="", dept_code="", dept_name="", now=None, actor="cli"):
    now = time.time() if now is None else now
    if not window_id or len(window_id) > 32:
        raise DeviceError("window id must be 1..32 characters")
    with _tx(conn):
        conn.execute(
            """INSERT INTO windows (window_id, name, dept_code, dept_name, created_at) VALUES (?,?,?,?,?)
               ON CONFLICT(window_id) DO UPDATE SET name=excluded.name, dept_code=excluded.dept_code,
               dept_name=excluded.dept_name""",
            (window_id, name, dept_code, dept_name, now))
        audit(conn, now, actor, "window.add", window_id, name)


def add(conn, device_id, key=None, window_id=None, transport="serial", now=None, actor="cli", fw_version=None, board=None):
    """Register a keypad with its key (generated when None); bind it when window_id is given. Returns the key."""
    now = time.time() if now is None else now
    try:
        _check_device_id(device_id)
    except ProtocolError as e:
        raise DeviceError(e.detail) from None
    if transport not in TRANSPORTS:
        raise DeviceError("transport must be one of %s" % ", ".join(TRANSPORTS))
    key = new_key() if key is None else bytes(key)
    if len(key) != KEY_LEN:
        raise DeviceError("a device key is %d bytes" % KEY_LEN)
    with _tx(conn):
        if conn.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)).fetchone():
            raise DeviceError("device %s already exists (use rotate-key or replace)" % device_id)
        conn.execute("INSERT INTO devices (device_id, key_hex, transport, created_at, fw_version, board) VALUES (?,?,?,?,?,?)",
                     (device_id, key.hex(), transport, now, fw_version, board))
        audit(conn, now, actor, "device.add", device_id, "transport=%s" % transport)
        if window_id:
            _bind(conn, device_id, window_id, now, actor, "")
    return key


def register_flashed(conn, device_id, key, window_id=None, transport="serial", fw_version=None, board=None, now=None):
    """Called by `pingjia flash`/`provision` after a board answered with a signed HELLO:
    adds the device (or, when the id exists, replaces its key: a re-flash) and binds it."""
    now = time.time() if now is None else now
    exists = conn.execute("SELECT retired_at FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if exists is None:
        return add(conn, device_id, key, window_id, transport, now, "flash", fw_version, board)
    with _tx(conn):
        conn.execute("""UPDATE devices SET key_hex = ?, transport = ?, retired_at = NULL, fw_version = ?, board = ?
                        WHERE device_id = ?""", (bytes(key).hex(), transport, fw_version, board, device_id))
        audit(conn, now, "flash", "device.reflash", device_id, "key replaced")
        if window_id:
            _bind(conn, device_id, window_id, now, "flash", "re-flash")
    return key


def _bind(conn, device_id, window_id, now, actor, note):
    _check_window(conn, window_id)
    d = _device(conn, device_id)
    if d["retired_at"] is not None:
        raise DeviceError("device %s is retired" % device_id)
    if d["window_id"] == window_id:
        return
    # the window's current keypad (if another) and this keypad's current window are both released
    other = conn.execute("SELECT device_id FROM devices WHERE window_id = ? AND device_id != ?", (window_id, device_id)).fetchall()
    for (o,) in other:
        _unbind(conn, o, now, actor, "replaced by %s" % device_id)
    if d["window_id"] is not None:
        _unbind(conn, device_id, now, actor, "moved to %s" % window_id)
    conn.execute("UPDATE devices SET window_id = ? WHERE device_id = ?", (window_id, device_id))
    conn.execute("INSERT INTO bindings (device_id, window_id, bound_at, note) VALUES (?,?,?,?)", (device_id, window_id, now, note))
    audit(conn, now, actor, "device.bind", device_id, window_id)


def _unbind(conn, device_id, now, actor, note):
    d = _device(conn, device_id)
    if d["window_id"] is None:
        return
    conn.execute("UPDATE bindings SET unbound_at = ?, note = CASE WHEN note = '' THEN ? ELSE note || '; ' || ? END "
                 "WHERE device_id = ? AND unbound_at IS NULL", (now, note, note, device_id))
    conn.execute("UPDATE devices SET window_id = NULL WHERE device_id = ?", (device_id,))
    audit(conn, now, actor, "device.unbind", device_id, "%s %s" % (d["window_id"], note))


def bind(conn, device_id, window_id, now=None, actor="cli", note=""):
    """Bind a keypad to a window; the window's previous keypad (if any) is unbound."""
    now = time.time() if now is None else now
    with _tx(conn):
        _bind(conn, device_id, window_id, now, actor, note)


def unbind(conn, device_id, now=None, actor="cli", note=""):
    now = time.time() if now is None else now
    with _tx(conn):
        _unbind(conn, device_id, now, actor, note)


def replace(conn, old_id, new_id, now=None, actor="cli", retire_old=True):
    """The new unit takes over the old unit's window; the old one is retired (or left spare)."""
    now = time.time() if now is None else now
    with _tx(conn):
        old = _device(conn, old_id)
        if old["window_id"] is None:
            raise DeviceError("device %s is bound to no window; use bind" % old_id)
        _device(conn, new_id)
        _bind(conn, new_id, old["window_id"], now, actor, "replaces %s" % old_id)
        if retire_old:
            _retire(conn, old_id, now, actor)


def _retire(conn, device_id, now, actor):
    _unbind(conn, device_id, now, actor, "retired")
    conn.execute("UPDATE devices SET retired_at = ?, online = 0 WHERE device_id = ?", (now, device_id))
    audit(conn, now, actor, "device.retire", device_id)


def retire(conn, device_id, now=None, actor="cli"):
    """Take a keypad out of service: unbound, its key no longer accepted."""
    now = time.time() if now is None else now
    with _tx(conn):
        d = _device(conn, device_id)
        if d["retired_at"] is not None:
            raise DeviceError("device %s is already retired" % device_id)
        _retire(conn, device_id, now, actor)


def rotate_key(conn, device_id, key=None, now=None, actor="cli"):
    """A new key for a keypad (the unit must be re-provisioned with it). Returns the key."""
    now = time.time() if now is None else now
    key = new_key() if key is None else bytes(key)
    if len(key) != KEY_LEN:
        raise DeviceError("a device key is %d bytes" % KEY_LEN)
    with _tx(conn):
        d = _device(conn, device_id)
        if d["retired_at"] is not None:
            raise DeviceError("device %s is retired" % device_id)
        conn.execute("UPDATE devices SET key_hex = ? WHERE device_id = ?", (key.hex(), device_id))
        audit(conn, now, actor, "device.rotate-key", device_id)
    return key


def keys(conn):
    """{device_id: key bytes} of every device in service."""
    return {r[0]: bytes.fromhex(r[1]) for r in conn.execute("SELECT device_id, key_hex FROM devices WHERE retired_at IS NULL")}


def window_device(conn, window_id):
    """The keypad bound to a window, or None."""
    r = conn.execute("SELECT device_id FROM devices WHERE window_id = ? AND retired_at IS NULL", (window_id,)).fetchone()
    return r[0] if r else None


def history(conn, device_id=None, window_id=None):
    sql, params = "SELECT * FROM bindings WHERE 1=1", []
    if device_id:
        sql += " AND device_id = ?"
        params.append(device_id)
    if window_id:
        sql += " AND window_id = ?"
        params.append(window_id)
    return [dict(r) if isinstance(r, sqlite3.Row) else r for r in conn.execute(sql + " ORDER BY bound_at, id", params)]

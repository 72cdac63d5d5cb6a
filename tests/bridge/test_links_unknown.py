"""Starting and stopping the bridge: keypads it has not heard are not shown online; an upgrade migrates its store under systemd."""
import threading

from pingjia.bridge import config, devices, service
from pingjia.bridge.store import Store
from tests.bridge.conftest import older_release_store


def online(db):
    conn = Store(db).connect()
    try:
        return conn.execute("SELECT online FROM devices WHERE device_id = 'KP-0001'").fetchone()[0]
    finally:
        conn.close()


def set_online(db):
    conn = Store(db).connect()
    conn.execute("UPDATE devices SET online = 1, last_seen = 1")
    conn.close()


def test_online_flags_are_cleared_at_start_and_at_stop(tmp_path):
    db = str(tmp_path / "b.db")
    store = Store(db)
    store.migrate()
    conn = store.connect()
    devices.add_window(conn, "W01")
    devices.add(conn, "KP-0001", window_id="W01")
    conn.close()
    set_online(db)  # left over from a bridge that was killed
    cfg = config.validate({"bridge": {"db": db, "http_listen": "127.0.0.1:0", "watchdog": False},
                           "serial": {"ports": [str(tmp_path / "none*")]}, "mqtt": {"enabled": False}})
    ready, stop, seen = threading.Event(), threading.Event(), {}

    def on_ready(hub, http, transports):
        seen["at_start"] = online(db)
        set_online(db)  # as if the keypad had been heard
        ready.set()

    t = threading.Thread(target=service.run, args=(cfg, stop), kwargs={"on_ready": on_ready})
    t.start()
    assert ready.wait(30)
    stop.set()
    t.join(30)
    assert seen["at_start"] == 0
    assert online(db) == 0


def test_an_upgrade_migrating_a_hall_store_asks_systemd_for_time_first(tmp_path):
    """A bridge upgraded in place finds migrations pending (an index over years of cases takes a
    while on a slow disk): before each, it extends systemd's start timeout and says what it is doing,
    then migrates and only then reports READY."""
    import socket

    from pingjia.bridge import migrations

    db = str(tmp_path / "b.db")
    older_release_store(db, applied=3)
    pending = [name for name, _ in migrations.MIGRATIONS[3:]]
    assert pending
    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(30)
        cfg = config.validate({"bridge": {"db": db, "http_listen": "127.0.0.1:0", "watchdog": False},
                               "serial": {"ports": [str(tmp_path / "none*")]}, "mqtt": {"enabled": False}})
        stop = threading.Event()
        t = threading.Thread(target=service.run, args=(cfg, stop), kwargs={"notifier": service.Notifier(sock_path),
                                                                          "on_ready": lambda *a: stop.set()})
        t.start()
        got = []
        while not got or not got[-1].startswith("READY=1"):
            got.append(sock.recv(4096).decode())
        t.join(30)
    assert got[:-1] == ["EXTEND_TIMEOUT_USEC=600000000\nSTATUS=applying database migration %s" % n for n in pending]
    conn = Store(db).connect()
    assert [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY rowid")] == [n for n, _ in migrations.MIGRATIONS]
    conn.close()

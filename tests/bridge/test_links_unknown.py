"""A (re)started or stopped bridge does not show keypads online that it has not heard."""
import threading

from pingjia.bridge import config, devices, service
from pingjia.bridge.store import Store


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

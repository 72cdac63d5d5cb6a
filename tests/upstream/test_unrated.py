"""Unrated cases -> an event on a real Mosquitto (with the hall's ACL) and a real webhook; never a rating."""
import json
import logging
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest

from pingjia.bridge import unrated
from pingjia.bridge.broker import LocalBroker
from pingjia.bridge.store import Store
from pingjia.protocol import topics

from .conftest import T0, Clock, add_case, outbox


class Webhook:
    """A real HTTP server recording POSTs; answers `status` (a list consumed in order, then 200)."""

    def __init__(self, statuses=()):
        self.got = []
        self.statuses = list(statuses)
        hook = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                st = hook.statuses.pop(0) if hook.statuses else 200
                if st == 200:
                    hook.got.append((dict(self.headers), json.loads(body)))
                self.send_response(st)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/invite" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def broker(tmp_path):
    b = LocalBroker(tmp_path / "mq", hall="h1").start()
    yield b
    b.stop()


def subscribe(b, user):
    got = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sms-gw")
    c.username_pw_set(*b.service_credentials(user))
    ready = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(topics.unrated("h1"), qos=1), None)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, u, m: got.put((m.topic, json.loads(m.payload)))
    c.connect(b.host, b.port)
    c.loop_start()
    assert ready.wait(10)
    return c, got


@pytest.mark.expect_warnings
def test_unrated_event_on_mosquitto_and_webhook(db, tmp_path, broker, caplog):
    dbpath = db.execute("PRAGMA database_list").fetchone()[2]
    cid = add_case(db, "U-0001", "W03", finished_at=T0, contact_ref="sms-ref:7f3a", task_name="社保卡补办")
    add_case(db, "R-0002", "W03", finished_at=T0, stars=5)  # rated: no event
    ratings_before = db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
    outbox_before = outbox(db)
    sub, got = subscribe(broker, "@sms")
    hook = Webhook(statuses=[503])  # the gateway is down at first
    pub = unrated.MqttPublisher(broker.host, broker.port, *broker.bridge_credentials(), client_id="bridge-unrated")
    clock = Clock(T0 + 100)
    store = Store(dbpath)
    cfg = {"webhook": hook.url, "webhook_secret": "s3cret"}
    n = unrated.Notifier(store.connect, "h1", cfg, publish=pub, clock=clock)
    try:
        assert unrated.sync_missing(db, "h1", clock(), cfg) == 1
        assert unrated.sync_missing(db, "h1", clock(), cfg) == 0  # once per case
        assert n.pump() == 0  # MQTT delivered, webhook failed: retried later
        topic, ev = got.get(timeout=10)
        assert topic == "pj/h1/unrated"
        assert ev == {"event": "case.unrated", "hall": "h1", "case_id": cid, "project_no": "U-0001", "window_id": "W03",
                      "window_name": "窗口W03", "task_code": "T001", "task_name": "社保卡补办", "dept_code": "D01",
                      "dept_name": "部门", "user_prop": 1, "contact_ref": "sms-ref:7f3a",
                      "finished_at": "2025-11-21T10:00:00+08:00", "finished_ts": T0, "invite_after": T0 + 86400,
                      "event_id": "unrated:U-0001"}
        row = db.execute("SELECT mqtt_at, webhook_at, attempts, last_error FROM unrated_notices").fetchone()
        assert row[0] is not None and row[1] is None and row[2] == 1 and "webhook" in row[3]
        assert n.pump() == 0  # not due yet
        clock.advance(5)
        assert n.pump() == 1
        ((headers, body),) = hook.got
        assert body == ev
        import hashlib
        import hmac
        assert headers["X-Signature"] == hmac.new(b"s3cret", json.dumps(ev, ensure_ascii=False, sort_keys=True).encode(),
                                                  hashlib.sha256).hexdigest()
        assert got.empty()  # MQTT was not published twice
        # never a rating: nothing in ratings, the outbox holds only the core's 'unrated' record
        assert db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == ratings_before
        assert outbox(db) == outbox_before
        assert db.execute("SELECT state FROM cases WHERE case_id = ?", (cid,)).fetchone()[0] == "unrated"
    finally:
        sub.loop_stop()
        sub.disconnect()
        pub.close()
        hook.stop()
    assert any("not delivered" in m.getMessage() for m in caplog.records if m.levelno == logging.WARNING)


def test_acl_keeps_other_users_off_the_topic(broker, db):
    """Only the bridge may publish unrated events: the case-system user cannot (hall ACL)."""
    pub = unrated.MqttPublisher(broker.host, broker.port, *broker.service_credentials("@cases"), client_id="rogue", timeout=2)
    sub, got = subscribe(broker, "@sms")
    try:
        pub(topics.unrated("h1"), b'{"event":"forged"}')
        with pytest.raises(queue.Empty):
            got.get(timeout=1.0)
    finally:
        sub.loop_stop()
        sub.disconnect()
        pub.close()


def test_rated_late_before_delivery_is_withdrawn(db):
    cid = add_case(db, "LATE", "W01", finished_at=T0)
    sent = []
    n = unrated.Notifier(lambda: db, "h1", {}, publish=lambda t, p: sent.append(p) or True, clock=lambda: T0 + 100)
    unrated.enqueue(db, cid, "h1", T0 + 60)
    db.execute("UPDATE cases SET state = 'rated' WHERE case_id = ?", (cid,))  # the keypad's late rating arrived
    assert n.pump(db) == 0 and sent == []
    assert "withdrawn" in db.execute("SELECT last_error FROM unrated_notices").fetchone()[0]
    assert unrated.enqueue(db, cid, "h1", T0 + 200) is False  # not unrated any more: no new event


def test_hook_queues_and_wakes(db):
    class Hub:
        on_rated, on_unrated = [], []
    dbpath = db.execute("PRAGMA database_list").fetchone()[2]
    sent = []
    store = Store(dbpath)
    n = unrated.Notifier(store.connect, "h1", {}, publish=lambda t, p: sent.append((t, json.loads(p))) or True)
    hub = Hub()
    unrated.wire(hub, store, n, "h1")
    cid = add_case(db, "HK", "W01", finished_at=T0)
    hub.on_unrated[0]({"case_id": cid, "project_no": "HK"})
    assert n._wake.is_set()
    assert n.pump() == 1 and sent[0][0] == "pj/h1/unrated" and sent[0][1]["project_no"] == "HK"
    assert unrated.validate({"webhook": "ftp://x", "mqt": 1}) == [
        "[unrated] unknown key 'mqt' (known: invite_after_s, mqtt, retry_max_s, timeout, timezone, webhook, webhook_secret)",
        "[unrated] webhook 'ftp://x' is not an http(s) URL"]

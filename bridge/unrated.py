"""Unrated cases -> an event for the SMS invitation gateway (离场“一码一评”).

A case whose prompt ended without a rating is recorded unrated by the core
(cases.state = 'unrated'). Here it becomes one event, kept in the table
`unrated_notices` until delivered to every configured sink:
  - MQTT: JSON on topics.unrated(hall) ('pj/<hall>/unrated'), QoS 1, not retained
  - webhook: JSON POST to [unrated] webhook, optionally signed (X-Signature:
    hex HMAC-SHA256 of the body with webhook_secret)
Failed deliveries are retried with backoff; a case that got its rating late
(the keypad was offline) before delivery is withdrawn, not announced. The
event never carries or creates a rating: the SMS gateway invites the citizen,
the platform decides what silence means, not us.

Config [unrated] (all optional):
  mqtt = true                  # publish on the hall's MQTT broker
  webhook = "http://sms-gw.local/invite"
  webhook_secret = "..."       # signs the POST
  invite_after_s = 86400       # told to the gateway: when to send the invitation
  timeout = 5.0
  retry_max_s = 300            # backoff cap
"""
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import datetime as _dt
from zoneinfo import ZoneInfo

from ..protocol import topics

log = logging.getLogger("pingjia.unrated")

DEFAULTS = {"mqtt": True, "webhook": "", "webhook_secret": "", "invite_after_s": 86400, "timeout": 5.0,
            "retry_max_s": 300.0, "timezone": "Asia/Shanghai"}


def validate(cfg):
    errors = []
    if not cfg:
        return errors
    if not isinstance(cfg, dict):
        return ["[unrated] must be a table"]
    for k in cfg:
        if k not in DEFAULTS:
            errors.append("[unrated] unknown key %r (known: %s)" % (k, ", ".join(sorted(DEFAULTS))))
    wh = cfg.get("webhook", "")
    if wh and not (isinstance(wh, str) and wh.startswith(("http://", "https://"))):
        errors.append("[unrated] webhook %r is not an http(s) URL" % (wh,))
    for k in ("invite_after_s", "timeout", "retry_max_s"):
        v = cfg.get(k, DEFAULTS[k])
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            errors.append("[unrated] %s must be a number >= 0" % k)
    return errors


EVENT_SQL = """
SELECT c.case_id, c.project_no, c.window_id, w.name AS window_name, c.task_code, c.task_name,
       c.dept_code, c.dept_name, c.clerk_id, c.user_prop, c.contact_ref, c.finished_at, c.state
FROM cases c LEFT JOIN windows w ON w.window_id = c.window_id WHERE c.case_id = ?
"""


def event(conn, case_id, hall, cfg=None):
    """The event for one unrated case (dict), or None when the case is not unrated."""
    c = dict(DEFAULTS, **(cfg or {}))
    cur = conn.execute(EVENT_SQL, (case_id,))
    r = cur.fetchone()
    if r is None:
        return None
    r = dict(zip([d[0] for d in cur.description], r))
    if r["state"] != "unrated":
        return None
    fin = r["finished_at"]
    iso = _dt.datetime.fromtimestamp(fin, ZoneInfo(c["timezone"])).isoformat(timespec="seconds") if fin else None
    return {
        "event": "case.unrated",
        "hall": hall,
        "case_id": r["case_id"],
        "project_no": r["project_no"],
        "window_id": r["window_id"],
        "window_name": r["window_name"] or "",
        "task_code": r["task_code"],
        "task_name": r["task_name"],
        "dept_code": r["dept_code"],
        "dept_name": r["dept_name"],
        "user_prop": r["user_prop"],
        "contact_ref": r["contact_ref"],
        "finished_at": iso,
        "finished_ts": fin,
        "invite_after": (fin + c["invite_after_s"]) if fin else None,
        "event_id": "unrated:%s" % r["project_no"],
    }


def enqueue(conn, case_id, hall, now, cfg=None):
    """Record the event for an unrated case (idempotent). True when newly queued."""
    ev = event(conn, case_id, hall, cfg)
    if ev is None:
        return False
    cur = conn.execute("INSERT OR IGNORE INTO unrated_notices (case_id, payload, created_at, next_try_at) VALUES (?,?,?,?)",
                       (case_id, json.dumps(ev, ensure_ascii=False, sort_keys=True), now, now))
    if conn.in_transaction and conn.isolation_level is not None:
        conn.commit()
    return cur.rowcount == 1


def sync_missing(conn, hall, now, cfg=None):
    """Queue events for every unrated case without one (catch-up after a restart or without hooks)."""
    ids = [r[0] for r in conn.execute(
        "SELECT c.case_id FROM cases c LEFT JOIN unrated_notices n ON n.case_id = c.case_id "
        "WHERE c.state = 'unrated' AND n.case_id IS NULL")]
    return sum(enqueue(conn, i, hall, now, cfg) for i in ids)


class MqttPublisher:
    """Own paho client that returns only after the broker's PUBACK (QoS 1)."""

    def __init__(self, host, port, username=None, password=None, client_id=None, timeout=5.0):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.timeout = timeout
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "pingjia-unrated")
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.2, 5)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def __call__(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (self.mqtt.MQTT_ERR_SUCCESS, self.mqtt.MQTT_ERR_NO_CONN):
            return False
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class Notifier:
    """Delivers queued unrated events. `publish(topic, payload_bytes) -> bool` is the
    MQTT sink (MqttPublisher, or the bridge link's publish); `webhook` from cfg."""

    def __init__(self, connect, hall, cfg=None, publish=None, clock=time.time):
        self.connect = connect  # () -> sqlite3 connection (the pump's own)
        self.hall = hall
        self.cfg = dict(DEFAULTS, **(cfg or {}))
        self.publish = publish if self.cfg["mqtt"] else None
        self.clock = clock
        self._wake = threading.Event()
        self.delivered = 0

    def wake(self, *a, **kw):
        self._wake.set()

    def _post(self, body):
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.cfg["webhook_secret"]:
            headers["X-Signature"] = hmac.new(self.cfg["webhook_secret"].encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(self.cfg["webhook"], data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.cfg["timeout"]) as resp:
            if not 200 <= resp.status < 300:
                raise OSError("HTTP %d" % resp.status)

    def pump(self, conn=None):
        """Deliver what is due. Returns the number of events fully delivered."""
        own = conn is None
        conn = conn or self.connect()
        try:
            return self._pump(conn)
        finally:
            if own:
                conn.close()

    def _pump(self, conn):
        now = self.clock()
        rows = conn.execute(
            "SELECT n.case_id, n.payload, n.mqtt_at, n.webhook_at, n.attempts, c.state FROM unrated_notices n "
            "JOIN cases c ON c.case_id = n.case_id WHERE n.withdrawn_at IS NULL AND n.next_try_at <= ? "
            "AND ((? AND n.mqtt_at IS NULL) OR (? AND n.webhook_at IS NULL)) ORDER BY n.next_try_at LIMIT 100",
            (now, self.publish is not None, bool(self.cfg["webhook"]))).fetchall()
        done = 0
        for case_id, payload, mqtt_at, webhook_at, attempts, state in rows:
            if state != "unrated":
                conn.execute("UPDATE unrated_notices SET withdrawn_at = ?, last_error = ? WHERE case_id = ?",
                             (now, "case is %s now: invitation withdrawn" % state, case_id))
                self._commit(conn)
                continue
            body = payload.encode()
            errs = []
            if self.publish is not None and mqtt_at is None:
                try:
                    ok = self.publish(topics.unrated(self.hall), body)
                except Exception as e:  # a sink's failure is retried, never fatal
                    ok, errs = False, errs + ["mqtt: %s" % e]
                if ok:
                    mqtt_at = self.clock()
                elif not errs:
                    errs.append("mqtt: not acknowledged")
            if self.cfg["webhook"] and webhook_at is None:
                try:
                    self._post(body)
                    webhook_at = self.clock()
                except (OSError, urllib.error.URLError) as e:
                    errs.append("webhook: %s" % e)
            if errs:
                delay = min(self.cfg["retry_max_s"], 2.0 ** min(attempts, 20))
                conn.execute("UPDATE unrated_notices SET mqtt_at = ?, webhook_at = ?, attempts = attempts + 1, "
                             "next_try_at = ?, last_error = ? WHERE case_id = ?",
                             (mqtt_at, webhook_at, now + delay, "; ".join(errs)[:500], case_id))
                (log.warning if attempts == 0 else log.info)(
                    "unrated event for case %s not delivered (attempt %d): %s", case_id, attempts + 1, "; ".join(errs))
            else:
                conn.execute("UPDATE unrated_notices SET mqtt_at = ?, webhook_at = ?, last_error = '' WHERE case_id = ?",
                             (mqtt_at, webhook_at, case_id))
                done += 1
            self._commit(conn)
        self.delivered += done
        return done

    @staticmethod
    def _commit(conn):
        if conn.in_transaction:
            conn.commit()

    def run(self, stop, interval=1.0):
        while not stop.is_set():
            try:
                self.pump()
            except Exception:
                log.exception("unrated: pump failed; retrying")
            self._wake.wait(interval)
            self._wake.clear()


def wire(hub, store, notifier, hall, cfg=None, clock=time.time):
    """Register on hub.on_unrated: queue the case's event after the commit and wake the notifier."""
    def on_unrated(case):
        conn = store.connect()
        try:
            enqueue(conn, case["case_id"], hall, clock(), cfg)
        finally:
            conn.close()
        notifier.wake()
    hub.on_unrated.append(on_unrated)
    return on_unrated

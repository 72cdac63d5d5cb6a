# pingjia.bridge.service: config -> store -> hub -> transports -> HTTP, under systemd.
#
# `run(cfg)` blocks until SIGTERM/SIGINT (or `stop` is set) and returns the exit
# code. systemd: EXTEND_TIMEOUT_USEC before each pending database migration (an
# upgrade may index years of rows); READY=1 once the HTTP API listens and transports started;
# WATCHDOG=1 every WatchdogSec/2 while the hub's writer thread is healthy;
# STOPPING=1 at shutdown. Datagrams go straight to $NOTIFY_SOCKET (no dependency).
# Shutdown order: the hub refuses new messages, commits and ACKs what it holds
# (links still open), then ports close and the broker session ends cleanly.
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from pathlib import Path

from . import devices
from .http_api import HttpServer
from .hub import Hub
from .store import Store

log = logging.getLogger("pingjia.bridge.service")

MIGRATION_TIMEOUT_S = 600  # start time systemd allows for each pending database migration


class Notifier:
    """sd_notify(3) without libsystemd: one datagram per state change."""

    def __init__(self, address=None):
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if self.address.startswith("@"):
            self.address = "\0" + self.address[1:]

    def send(self, state):
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(state.encode(), self.address)
            return True
        except OSError as e:
            log.error("sd_notify failed state=%s error=%r", state.split("\n")[0], e)
            return False

    @staticmethod
    def watchdog_interval():
        """Half of WatchdogSec from $WATCHDOG_USEC (if it is meant for this process), else None."""
        usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2e6


class CaseTopic:
    """JSON from the case system on pj/<hall>/cases, handled off paho's thread:
    {"action": "open", "project_no": ..., "window_id": ..., ...} | {"action": "finish"|"cancel", "project_no": ...}"""

    def __init__(self, hub):
        self.hub = hub
        self.q = queue.Queue()
        threading.Thread(target=self._run, name="cases-topic", daemon=True).start()

    def __call__(self, payload):
        self.q.put(payload)

    def _run(self):
        while True:
            payload = self.q.get()
            try:
                msg = json.loads(payload)
                action = msg.pop("action", None)
                if action == "open":
                    self.hub.open_case(msg, actor="case-mqtt")
                elif action in ("finish", "cancel"):
                    fn = self.hub.finish_case if action == "finish" else self.hub.cancel_case
                    fn(str(msg.get("project_no", "")), actor="case-mqtt")
                else:
                    raise ValueError("action must be open, finish or cancel")
            except Exception as e:  # the case system sent something we can't do: say so, keep going
                log.error("case message refused error=%r payload=%r", str(e), bytes(payload)[:200])


class Transports:
    """Serial and MQTT ingest as configured (bridge/serial_ingest.py, mqtt_ingest.py, broker.py)."""

    def __init__(self, cfg, hub, store):
        self.cfg, self.hub, self.store = cfg, hub, store
        self.serial = self.mqtt = self.broker = None
        self._broker_keys = None

    def start(self):
        s, mq = self.cfg.serial, self.cfg.mqtt
        if s["enabled"]:
            from .serial_ingest import SerialIngest

            self.serial = SerialIngest(self.hub, s["ports"], baudrate=s["baud"], scan_s=float(s["rescan_s"])).start()
        if mq["enabled"]:
            self._start_mqtt(mq)
        return self

    def _start_mqtt(self, mq):
        from .mqtt_ingest import MqttLink

        host, port, user, password = mq["host"], mq["port"], mq["username"] or None, mq["password"] or None
        if mq["password_file"]:
            password = Path(mq["password_file"]).read_text().strip()
        if mq["embedded"]:
            from .broker import LocalBroker

            workdir = Path(self.cfg.bridge["db"]).resolve().parent / "mosquitto"
            self.broker = LocalBroker(workdir, self.cfg.bridge["hall"], port=port, bind=host)
            self.refresh_broker()
            self.broker.start()
            host, port = self.broker.host, self.broker.port
            user, password = self.broker.bridge_credentials()
            log.info("embedded mosquitto started host=%s port=%d workdir=%s", host, port, workdir)
        tls = {"ca_certs": mq["tls_ca"]} if mq["tls_ca"] else None
        self.mqtt = MqttLink(self.hub, self.cfg.bridge["hall"], host=host, port=port, username=user, password=password,
                             keepalive=mq["keepalive"], tls=tls, on_cases=CaseTopic(self.hub)).start(wait=5)
        self.hub.add_link("mqtt", self.mqtt)

    def refresh_broker(self):
        """Keep the embedded broker's passwd/ACL in step with the device table (add, rotate, retire)."""
        if self.broker is None:
            return
        conn = self.store.connect()
        try:
            keys = devices.keys(conn)
        finally:
            conn.close()
        if keys != self._broker_keys:
            self.broker.set_devices(keys)
            self._broker_keys = keys

    def close(self):
        for name, t in (("serial", self.serial), ("mqtt", self.mqtt), ("broker", self.broker)):
            if t is None:
                continue
            try:
                t.stop()
            except Exception as e:
                log.error("transport stop failed name=%s error=%r", name, e)


def _start_upstream(cfg, hub, store, transports):
    """bridge/upstream/workers.py: outbox sender, 差评 follow-ups, unrated events (hooked on hub.on_rated/on_unrated)."""
    try:
        from .upstream import workers
    except ImportError:
        return None
    publish = getattr(transports.mqtt, "publish", None) if transports.mqtt is not None else None
    return workers.start(cfg, hub, store, mqtt_publish=publish)


def run(cfg, stop=None, notifier=None, on_ready=None):
    """Run the bridge until SIGTERM/SIGINT or `stop` (threading.Event) is set. Returns 0 on a clean stop.
    A failure while starting stops what did start (the embedded broker too) and raises."""
    stop = stop or threading.Event()
    notifier = notifier or Notifier()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    store = Store(cfg.bridge["db"])
    # a pending migration may build an index over years of rows (seconds here, longer on a slow disk):
    # each one extends systemd's start timeout (TimeoutStartSec) instead of being killed and restarted
    store.migrate(before=lambda name: notifier.send("EXTEND_TIMEOUT_USEC=%d\nSTATUS=applying database migration %s"
                                                    % (MIGRATION_TIMEOUT_S * 1000000, name)))
    store.links_unknown()  # online again when heard
    parts = {}
    try:
        parts["hub"] = hub = Hub(store, rules=cfg.rules(), hall=cfg.bridge["hall"],
                                  device_log_days=cfg.bridge["device_log_days"]).start()
        host, port = cfg.http_address()
        parts["http"] = http = HttpServer(hub, host, port, cfg.bridge["http_token"]).start()
        parts["transports"] = transports = Transports(cfg, hub, store)
        transports.start()
        parts["upstream"] = _start_upstream(cfg, hub, store, transports)
    except BaseException as e:
        log.error("bridge failed to start error=%r", e)
        _shutdown(parts)
        raise
    log.info("bridge ready hall=%s db=%s http=%s serial=%s mqtt=%s", cfg.bridge["hall"], store.path, http.url,
             cfg.serial["enabled"], cfg.mqtt["enabled"])
    notifier.send("READY=1\nSTATUS=serving %s" % http.url)
    if on_ready:
        on_ready(hub, http, transports)
    interval = Notifier.watchdog_interval() if cfg.bridge["watchdog"] else None
    last_refresh = time.monotonic()
    while not stop.wait(min(interval or 5.0, 5.0)):
        if interval and hub.healthy():
            notifier.send("WATCHDOG=1")
        if time.monotonic() - last_refresh > 10:
            last_refresh = time.monotonic()
            try:
                transports.refresh_broker()
            except Exception as e:
                log.error("broker refresh failed error=%r", e)
    notifier.send("STOPPING=1")
    log.info("bridge stopping: intake closed, flushing")
    flushed = _shutdown(parts)
    store.links_unknown()
    log.info("bridge stopped flushed=%s stats=%s", flushed, json.dumps(hub.stats(), sort_keys=True))
    return 0


def _shutdown(parts):
    """Intake off, HTTP off, commit+ACK what the hub holds, upstream off, then ports and broker."""
    hub = parts.get("hub")
    flushed = True
    if hub is not None:
        hub.stop_intake()
    if parts.get("http") is not None:
        parts["http"].stop()
    if hub is not None:
        flushed = hub.stop(timeout=15)
    if parts.get("upstream") is not None:
        parts["upstream"].stop()
    if parts.get("transports") is not None:
        parts["transports"].close()
    return flushed

"""The upstream side of a running bridge, in one call for bridge/service.py:

    from .upstream import workers
    up = workers.start(cfg, hub, store, mqtt_publish=transports.mqtt.publish if transports.mqtt else None)
    ...
    up.stop()

Starts (each in its own thread, each with its own SQLite connection):
  - the outbox Sender when [upstream] has an endpoint (woken by hub.on_rated / on_unrated)
  - 差评 follow-ups: hub.on_rated_tx -> followup.sync_case in the rating's own transaction
    (+ a catch-up sweep every minute for ratings stored before this)
  - unrated-case events: hub.on_unrated -> unrated.enqueue -> Notifier (MQTT + webhook)
`cfg` is the bridge Config (bridge/config.py) or a dict {"hall", "upstream"}.
"""
import logging
import threading
import time

from .. import followup, unrated
from . import sender as _sender

log = logging.getLogger("pingjia.upstream")
SWEEP_S = 60.0


class Workers:
    def __init__(self, store, hall, up, hub=None, mqtt_publish=None, clock=time.time):
        self.store, self.hall, self.up, self.hub, self.clock = store, hall, dict(up or {}), hub, clock
        self.stop_event = threading.Event()
        self.threads = []
        self.sender = None
        self.notifier = unrated.Notifier(store.connect, hall, self.up.get("unrated"), publish=mqtt_publish, clock=clock)
        if _sender.enabled(self.up):
            self.sender = _sender.Sender(store, self.up, clock=clock)

    def start(self):
        if self.hub is not None:
            followup.wire(self.hub, self.up.get("followup"))
            unrated.wire(self.hub, self.store, self.notifier, self.hall, self.up.get("unrated"), clock=self.clock)
            if self.sender is not None:
                self.hub.on_rated.append(self.sender.wake)
                self.hub.on_unrated.append(self.sender.wake)
        self._spawn("upstream-sender", self.sender.run, self.stop_event) if self.sender else None
        self._spawn("unrated-notifier", self.notifier.run, self.stop_event)
        self._spawn("followup-sweep", self._sweep)
        log.info("upstream workers started sender=%s profile=%s", bool(self.sender),
                 self.sender.profile.name if self.sender else "-")
        return self

    def _spawn(self, name, fn, *args):
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _sweep(self):
        while True:
            conn = self.store.connect()
            try:
                now = self.clock()
                n = followup.sync_missing(conn, now, self.up.get("followup"))
                m = unrated.sync_missing(conn, self.hall, now, self.up.get("unrated"))
                if n or m:
                    log.info("catch-up: %d follow-up(s) opened, %d unrated event(s) queued", n, m)
                    self.notifier.wake()
            except Exception:
                log.exception("follow-up/unrated sweep failed")
            finally:
                conn.close()
            if self.stop_event.wait(SWEEP_S):
                return

    def stop(self, timeout=5.0):
        self.stop_event.set()
        if self.sender:
            self.sender.wake()
        self.notifier.wake()
        for t in self.threads:
            t.join(timeout)


def start(cfg, hub, store, mqtt_publish=None, clock=time.time):
    if isinstance(cfg, dict):
        hall, up = cfg.get("hall", ""), cfg.get("upstream", {})
    else:
        hall, up = cfg.bridge["hall"], dict(cfg.upstream)
    up = dict(up)
    up.setdefault("hall", hall)
    return Workers(store, hall, up, hub=hub, mqtt_publish=mqtt_publish, clock=clock).start()

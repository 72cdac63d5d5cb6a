"""A minimal MQTT keypad for transport tests (paho, a real client per device).

It behaves like the firmware's delivery layer: every event is kept in a
journal until an ACK for its seq arrives on the keypad's down topic, and
unACKed events are published again every `retransmit_s`. Retained "online"
state on connect, retained "offline" as the last will. Used in-process, or as
a subprocess (`python tests/transport/mqttkeypad.py ...`) when a test needs a
client that dies without DISCONNECT.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt

from pingjia.bridge.broker import device_password
from pingjia.protocol import messages, topics


class Keypad:
    def __init__(self, host, port, hall, device_id, key, boot=1, retransmit_s=0.3, window=8, password=None):
        self.hall, self.device_id, self.key, self.boot = hall, device_id, key, boot
        self.retransmit_s, self.window = retransmit_s, window
        self.journal = {}  # seq -> raw
        self.sent_at = {}
        self.acked = set()
        self.acks = 0
        self.commands = []  # decoded non-ACK commands (PROMPT, ...)
        self.next_seq = 1
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self._stop = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False, protocol=mqtt.MQTTv311)
        c.username_pw_set(device_id, password if password is not None else device_password(key))
        c.will_set(topics.state(hall, device_id), topics.OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(0.1, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        self.client = c
        self.host, self.port = host, port
        self._thread = threading.Thread(target=self._retransmit_loop, daemon=True, name="kp-" + device_id)

    def start(self, wait=10.0):
        self.client.connect_async(self.host, self.port, 10)
        self.client.loop_start()
        self._thread.start()
        if wait and not self.connected.wait(wait):
            raise AssertionError("keypad %s did not connect" % self.device_id)
        return self

    def stop(self):
        self._stop.set()
        self.client.publish(topics.state(self.hall, self.device_id), topics.OFFLINE, qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:
            return
        client.subscribe(topics.down(self.hall, self.device_id), 1)
        client.publish(topics.state(self.hall, self.device_id), topics.ONLINE, qos=1, retain=True)
        self.connected.set()
        with self.lock:
            self.sent_at.clear()  # resend what is unACKed at once

    def _on_message(self, client, userdata, msg):
        try:
            m = messages.decode(msg.payload, self.key)
        except Exception:  # noqa: BLE001 - a keypad ignores what it cannot verify
            return
        if m.type != messages.ACK:
            with self.lock:
                self.commands.append(m)
            return
        with self.lock:
            self.acks += 1
            for s in list(m.seqs) + [s for s in self.journal if s <= m.upto]:
                if self.journal.pop(s, None) is not None:
                    self.acked.add(s)
                self.sent_at.pop(s, None)
        self._pump()

    def press(self, stars=5, token=None):
        """Journal one press (a rating when a prompt's token is given, else unsolicited); returns its seq."""
        with self.lock:
            seq = self.next_seq
            self.next_seq += 1
            if token:
                msg = messages.Message(messages.RATING, self.device_id, self.boot, seq, stars=stars, age_ms=0, token=token, nth=1)
            else:
                msg = messages.Message(messages.UNSOLICITED, self.device_id, self.boot, seq, stars=stars, age_ms=0)
            self.journal[seq] = messages.encode(msg, self.key)
        self._pump()
        return seq

    def _pump(self, force=False):
        now = time.monotonic()
        out = []
        with self.lock:
            for seq in sorted(self.journal)[: self.window]:
                t = self.sent_at.get(seq)
                if t is None or force or now - t >= self.retransmit_s:
                    self.sent_at[seq] = now
                    out.append(self.journal[seq])
        if self.connected.is_set():
            for raw in out:
                self.client.publish(topics.up(self.hall, self.device_id), raw, qos=1)

    def _retransmit_loop(self):
        while not self._stop.wait(self.retransmit_s / 3):
            self._pump()

    @property
    def pending(self):
        with self.lock:
            return len(self.journal)


if __name__ == "__main__":  # python mqttkeypad.py host port hall device_id key_hex
    host, port, hall, dev, key = sys.argv[1:6]
    kp = Keypad(host, int(port), hall, dev, bytes.fromhex(key)).start()
    print("connected", flush=True)
    while True:
        time.sleep(1)

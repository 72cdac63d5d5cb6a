"""The host simulator (tools/simkeypads.py): the real firmware core over a real Mosquitto
(password file + ACL, per-device credentials) and over real ptys read with pyserial."""
import threading
import time

import pytest
import serial

from pingjia.bridge.broker import LocalBroker
from pingjia.protocol import framing, messages as M, topics
from pingjia.tools.simkeypads import Fleet, derive_key

HALL = "h1"


def wait_for(pred, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


class MiniBridge:
    """Just enough bridge over MQTT: records messages and state, ACKs journaled events, sends commands."""

    def __init__(self, broker, keys, ack=True):
        import paho.mqtt.client as mqtt

        self.keys = keys
        self.ack = ack
        self.msgs = []
        self.states = {}
        self.boot = {}
        self.cmd = {}
        self.lock = threading.Lock()
        user, pw = broker.bridge_credentials()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-bridge")
        self.c.username_pw_set(user, pw)
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port)
        self.c.subscribe("pj/%s/dev/+/up" % HALL, 1)
        self.c.subscribe("pj/%s/dev/+/state" % HALL, 1)
        self.c.loop_start()

    def _on(self, c, u, m):
        _hall, dev, leaf = topics.parse_device_topic(m.topic)
        with self.lock:
            if leaf == "state":
                self.states[dev] = m.payload
                return
            msg = M.decode(m.payload, self.keys.get)
            self.msgs.append(msg)
            if msg.type in (M.HELLO, M.STATUS):
                self.boot[dev] = msg.boot
        if self.ack and msg.type in M.JOURNALED:
            self.send(dev, M.ACK, seqs=[msg.seq])

    def send(self, dev, mtype, **f):
        with self.lock:
            n = self.cmd[dev] = self.cmd.get(dev, 0) + 1
            boot = self.boot.get(dev, 0)
        raw = M.encode(M.Message(mtype, dev, boot, n, **f), self.keys[dev])
        self.c.publish(topics.down(HALL, dev), raw, qos=1)

    def of(self, dev, mtype):
        with self.lock:
            return [m for m in self.msgs if m.device_id == dev and m.type == mtype]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def broker(tmp_path):
    keys = {"SIM-%04d" % (i + 1): derive_key("t", "SIM-%04d" % (i + 1)) for i in range(3)}
    b = LocalBroker(tmp_path / "mosquitto", HALL)
    b.set_devices(keys)
    b.start()
    b.keys = keys
    yield b
    b.stop()


def test_mqtt_fleet_hello_press_ack_prompt_and_last_will(broker, tmp_path):
    bridge = MiniBridge(broker, broker.keys)
    fleet = Fleet(3, "mqtt", broker.host, broker.port, HALL, str(tmp_path / "pads"), keys=broker.keys)
    try:
        ids = fleet.devices
        wait_for(lambda: all(bridge.of(d, M.HELLO) for d in ids), what="HELLO from every keypad")
        wait_for(lambda: all(bridge.states.get(d) == b"online" for d in ids), what="retained online")
        for d in ids:
            fleet.press(d, 3)
        wait_for(lambda: all(bridge.of(d, M.UNSOLICITED) for d in ids), what="unsolicited presses")
        assert fleet.wait(lambda f: f.stats()["journal_depth"] == 0), "ACKs trim the journals"
        d = ids[0]
        bridge.send(d, M.PROMPT, token="CASE0001", timeout_s=60)
        assert fleet.wait(lambda f: f.pads[d].app.token == "CASE0001")
        fleet.press(d, 5)
        wait_for(lambda: bridge.of(d, M.RATING), what="rating")
        r = bridge.of(d, M.RATING)[0]
        assert (r.stars, r.token, r.nth) == (5, "CASE0001", 1)
        with fleet.lock:
            fleet.pads[ids[1]].crash()
            del fleet.pads[ids[1]]
        wait_for(lambda: bridge.states.get(ids[1]) == b"offline", what="last will 'offline'")
    finally:
        fleet.stop()
        bridge.close()


def test_mqtt_outage_then_replay_and_restart_keeps_seq(broker, tmp_path):
    root = str(tmp_path / "pads")
    bridge = MiniBridge(broker, broker.keys, ack=False)
    keys = dict(list(broker.keys.items())[:1])
    d = list(keys)[0]
    fleet = Fleet(1, "mqtt", broker.host, broker.port, HALL, root, keys=keys)
    try:
        wait_for(lambda: bridge.of(d, M.HELLO), what="hello")
        boot1 = bridge.of(d, M.HELLO)[0].boot
        for s in (1, 2, 3):
            fleet.press(d, s)
            time.sleep(0.2)
        wait_for(lambda: len({m.seq for m in bridge.of(d, M.UNSOLICITED)}) == 3, what="3 events")
    finally:
        fleet.stop()  # unacknowledged events stay in the journal
    seqs1 = sorted({m.seq for m in bridge.of(d, M.UNSOLICITED)})
    bridge.ack = True
    fleet = Fleet(1, "mqtt", broker.host, broker.port, HALL, root, keys=keys)  # power cycle
    try:
        wait_for(lambda: any(m.boot > boot1 for m in bridge.of(d, M.HELLO)), what="hello of the new boot")
        assert fleet.wait(lambda f: f.stats()["journal_depth"] == 0), "journaled events of the last boot replayed and ACKed"
        fleet.press(d, 4)
        wait_for(lambda: any(m.stars == 4 for m in bridge.of(d, M.UNSOLICITED)), what="new press")
        new = [m for m in bridge.of(d, M.UNSOLICITED) if m.stars == 4][0]
        assert new.seq > max(seqs1), "seq never repeats across a restart"
        old = [m for m in bridge.of(d, M.UNSOLICITED) if m.seq == seqs1[0]]
        assert old[-1].age_ms >= old[0].age_ms, "a replayed event keeps its age"
    finally:
        fleet.stop()
        bridge.close()


def _frames(port, dec, key, until, timeout=10.0):
    out = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = port.read(4096)
        for kind, v in dec.feed(data):
            if kind == framing.FRAME:
                out.append(M.decode(v, key))
        if until(out):
            return out
    raise AssertionError("no matching frames; got %r" % out)


def test_serial_fleet_over_ptys(tmp_path):
    fleet = Fleet(2, "serial", root=str(tmp_path / "pads"), seed="t")
    try:
        for d, path in fleet.ports.items():
            key = fleet.keys[d]
            with serial.Serial(path, 115200, timeout=0.05) as port:
                dec = framing.Decoder()
                fleet.press(d, 2)
                got = _frames(port, dec, key, lambda ms: any(m.type == M.UNSOLICITED for m in ms))
                ev = [m for m in got if m.type == M.UNSOLICITED][0]
                assert ev.stars == 2 and ev.device_id == d
                port.write(framing.encode(M.encode(M.Message(M.ACK, d, ev.boot, 0, seqs=[ev.seq]), key)))
                assert fleet.wait(lambda f: f.pads[d].app.journal.depth() == 0), "ACK over the pty trims"
    finally:
        fleet.stop()

"""Transports with the real bridge core (bridge.hub.Hub + SQLite store): MQTT against a
real Mosquitto, serial over real ptys. Afterwards each press is in the store exactly once."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pingjia.bridge.mqtt_ingest import MqttLink
from pingjia.bridge.serial_ingest import SerialIngest
from pingjia.protocol import framing, messages

from tests.transport.conftest import HALL, Pty, q, wait_for
from tests.transport.mqttkeypad import Keypad

ROOT = Path(__file__).resolve().parents[2]


def acked(pty, key, want, timeout=10):
    """Read ACK frames off the pty until every seq in `want` was ACKed (the hub may ACK several in one)."""
    got = set()
    end = time.monotonic() + timeout
    while not want <= got and time.monotonic() < end:
        for raw in pty.read_frames(1, timeout=0.2):
            got |= set(messages.decode(raw, key).seqs)
    return got


def bridge_link(hub, broker, **kw):
    user, pw = broker.bridge_credentials()
    return MqttLink(hub, HALL, broker.host, broker.port, user, pw, **kw).start(wait=10)


def test_mqtt_case_prompt_rating_ack(broker, keys, hub, bstore):
    link = bridge_link(hub, broker)
    dev = "KP-0001"  # bound to W01
    kp = Keypad(broker.host, broker.port, HALL, dev, keys[dev]).start()
    try:
        wait_for(lambda: q(bstore, "SELECT online FROM devices WHERE device_id=?", (dev,)) == [(1,)], what="online in the store")
        hub.open_case({"project_no": "P-001", "window_id": "W01", "task_name": "营业执照", "clerk_name": "张三"})
        hub.finish_case("P-001")
        wait_for(lambda: kp.commands, what="prompt on the keypad's down topic")
        prompt = kp.commands[0]
        assert prompt.type == messages.PROMPT and prompt.token
        seq = kp.press(4, token=prompt.token)
        wait_for(lambda: kp.pending == 0, what="ACK after commit")
        case = hub.get_case("P-001")
        assert case["rating"]["stars"] == 4
        assert q(bstore, "SELECT device_id, seq, kind, via FROM events") == [(dev, seq, "rating", "mqtt")]
    finally:
        kp.stop()
        link.stop()


@pytest.mark.expect_warnings
@pytest.mark.parametrize("how", ["graceful", "kill"])
def test_mqtt_broker_restart_each_event_stored_once(broker, keys, hub, bstore, caplog, how):
    link = bridge_link(hub, broker, reconnect_min=0.1, reconnect_max=1)
    kps = [Keypad(broker.host, broker.port, HALL, d, keys[d], retransmit_s=0.5).start() for d in sorted(keys)[:6]]
    pressed = {}

    def presser(kp):
        for n in range(60):
            pressed.setdefault(kp.device_id, []).append(kp.press(1 + n % 5))
            time.sleep(0.01)

    threads = [threading.Thread(target=presser, args=(kp,)) for kp in kps]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: q(bstore, "SELECT count(*) FROM events")[0][0] >= 60, what="traffic before the restart")
        broker.stop() if how == "graceful" else broker.kill()
        time.sleep(0.5)
        broker.start()
        for t in threads:
            t.join()
        wait_for(lambda: all(kp.pending == 0 for kp in kps), timeout=60, what="every journal drained")
    finally:
        for kp in kps:
            kp.stop()
        link.stop()
    want = sorted((d, s) for d, ss in pressed.items() for s in ss)
    assert len(want) == 360
    assert q(bstore, "SELECT device_id, seq FROM events ORDER BY device_id, seq") == want  # PRIMARY KEY: once each
    assert hub.stats()["stored"] == 360
    warns = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warns and all("MQTT connection" in w and "lost" in w for w in warns), warns


def test_mqtt_last_will_sets_keypad_offline_in_store(broker, keys, hub, bstore):
    link = bridge_link(hub, broker)
    dev = "KP-0002"
    p = subprocess.Popen([sys.executable, str(Path(__file__).with_name("mqttkeypad.py")), broker.host, str(broker.port), HALL, dev,
                          keys[dev].hex()], stdout=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    online = lambda: q(bstore, "SELECT online FROM devices WHERE device_id=?", (dev,))[0][0]  # noqa: E731
    try:
        assert p.stdout.readline().strip() == b"connected"
        wait_for(lambda: online() == 1, what="online")
        p.send_signal(signal.SIGKILL)
        p.wait()
        wait_for(lambda: online() == 0, what="offline from the last will")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        link.stop()


@pytest.mark.expect_warnings
def test_serial_end_to_end_with_unplug(tmp_path, keys, hub, bstore, caplog):
    dev = "KP-0001"
    byid = tmp_path / "by-id"
    byid.mkdir()
    pty = Pty(byid / "usb-pingjia_keypad_0001-if00")
    ev = lambda s: framing.encode(messages.encode(messages.Message(messages.UNSOLICITED, dev, 1, s, stars=3, age_ms=5), keys[dev]))  # noqa: E731
    ing = SerialIngest(hub, [str(byid / "usb-pingjia_*")], scan_s=0.1, backoff_min=0.05, backoff_max=0.2).start()
    try:
        wait_for(lambda: ing.links, what="port opened")
        link = ing.links[pty.link]
        wait_for(lambda: link.stats["opens"], what="port opened")
        pty.write(b"boot banner\r\n" + ev(1) + ev(2) + ev(1))  # a duplicate too
        assert acked(pty, keys[dev], {1, 2}) == {1, 2}
        pty.write(b"Traceback (most recent call last):\r\nMemoryError: \r\n")
        wait_for(lambda: len(q(bstore, "SELECT * FROM device_log")) == 3, what="device log lines")
        pty.write(ev(3)[:20])
        pty.unplug()  # unplugged mid-frame; the by-id name stays, the pty behind it is gone
        wait_for(lambda: q(bstore, "SELECT online FROM devices WHERE device_id=?", (dev,)) == [(0,)], what="offline after unplug")
        pty.plug()
        wait_for(lambda: link.stats["opens"] >= 2, what="reopened")
        pty.write(ev(3))
        assert acked(pty, keys[dev], {3}) == {3}
        wait_for(lambda: q(bstore, "SELECT online FROM devices WHERE device_id=?", (dev,)) == [(1,)], what="online again")
    finally:
        ing.stop()
        pty.close()
    assert q(bstore, "SELECT seq, via FROM events ORDER BY seq") == [(s, "serial:" + pty.link) for s in (1, 2, 3)]
    assert q(bstore, "SELECT device_id, line FROM device_log ORDER BY id") == [
        (None, "boot banner"), (dev, "Traceback (most recent call last):"), (dev, "MemoryError: ")]
    assert hub.stats()["duplicates"] == 1
    warns = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warns if "port lost" in w]) == 1, warns
    # the cut frame is reported by the hub when the reader had read its first bytes before the unplug
    assert all("port lost" in w or ("reason=truncated" in w and "frame cut" in w) for w in warns), warns


@pytest.mark.expect_warnings
def test_firmware_keypads_over_mqtt_through_a_broker_restart(tmp_path, keys, broker, hub, bstore, caplog):
    """The real firmware core (tools/simkeypads.py: App + journal + MQTT link) against the real
    bridge: presses before, during and after a broker outage are each stored exactly once."""
    from pingjia.bridge.broker import device_password
    from pingjia.tools.simkeypads import Fleet

    link = bridge_link(hub, broker, reconnect_min=0.1, reconnect_max=1)
    sub = dict(sorted(keys.items())[:4])
    fleet = Fleet(4, "mqtt", broker.host, broker.port, HALL, str(tmp_path / "pads"), keys=sub,
                  password=lambda d: device_password(sub[d]))
    count = lambda: q(bstore, "SELECT count(*) FROM events")[0][0]  # noqa: E731
    try:
        wait_for(lambda: q(bstore, "SELECT count(*) FROM devices WHERE online = 1")[0][0] == 4, what="4 keypads online")
        for i in range(3):
            for d in sub:
                fleet.press(d, 1 + i)
        wait_for(lambda: count() == 12, what="first presses stored")
        assert fleet.wait(lambda f: f.stats()["journal_depth"] == 0), "ACKs trimmed the journals"
        broker.stop()
        for i in range(3):
            for d in sub:
                fleet.press(d, 5)  # journaled while the broker is away
        time.sleep(1.5)
        broker.start()
        for d in sub:
            fleet.press(d, 4)
        assert fleet.wait(lambda f: f.stats()["journal_depth"] == 0 and not f._q and
                          all(not p.todo for p in f.pads.values()), timeout=90), "every journal drained"
        wait_for(lambda: count() == 28, timeout=30, what="all 28 presses stored")
    finally:
        fleet.stop()
        link.stop()
    rows = q(bstore, "SELECT device_id, count(*), count(DISTINCT seq), group_concat(stars) FROM events GROUP BY device_id ORDER BY device_id")
    assert [(d, n, nd) for d, n, nd, _ in rows] == [(d, 7, 7) for d in sorted(sub)]
    assert all(sorted(s.split(",")) == ["1", "2", "3", "4", "5", "5", "5"] for *_, s in rows)
    warns = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warns and all("MQTT connection" in w and "lost" in w for w in warns), warns


def test_firmware_keypads_over_serial_ptys(tmp_path, keys, hub, bstore):
    """The real firmware core on ptys (tools/simkeypads.py, serial) read by the serial transport:
    HELLO sets the keypad's version, presses are stored once, ACKs trim the journals."""
    from pingjia.bridge.serial_ingest import SerialIngest
    from pingjia.tools.simkeypads import Fleet

    sub = dict(sorted(keys.items())[:3])
    fleet = Fleet(3, "serial", root=str(tmp_path / "pads"), keys=sub)
    byid = tmp_path / "by-id"
    byid.mkdir()
    for d, port in fleet.ports.items():
        os.symlink(port, byid / ("usb-pingjia_keypad_%s-if00" % d))
    ing = SerialIngest(hub, [str(byid / "usb-pingjia_keypad_*")], scan_s=0.1).start()
    count = lambda: q(bstore, "SELECT count(*) FROM events")[0][0]  # noqa: E731
    try:
        wait_for(lambda: len(ing.links) == 3 and all(l.stats["opens"] for l in list(ing.links.values())), what="3 ports open")
        for i in range(4):
            for d in sub:
                fleet.press(d, 5 - i)
        wait_for(lambda: count() == 12, timeout=30, what="12 presses stored")
        assert fleet.wait(lambda f: f.stats()["journal_depth"] == 0), "ACKs trimmed the journals"
        wait_for(lambda: q(bstore, "SELECT count(*) FROM devices WHERE fw_version IS NOT NULL AND online = 1")[0][0] == 3,
                 what="HELLO seen from every keypad")
    finally:
        ing.stop()
        fleet.stop()
    rows = q(bstore, "SELECT device_id, count(DISTINCT seq), group_concat(DISTINCT via) FROM events GROUP BY device_id ORDER BY device_id")
    assert rows == [(d, 4, "serial:" + str(byid / ("usb-pingjia_keypad_%s-if00" % d))) for d in sorted(sub)]

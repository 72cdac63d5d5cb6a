"""MQTT transport against a real Mosquitto (per test, free port, passwd + ACL)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pingjia.bridge.broker import BRIDGE_USER, CASES_USER, SMS_USER, acl_text, device_password
from pingjia.bridge.mqtt_ingest import MqttLink
from pingjia.protocol import messages, topics

from tests.transport.conftest import HALL, wait_for
from tests.transport.mqttkeypad import Keypad

ROOT = Path(__file__).resolve().parents[2]


def client(broker, user, password, cid=None):
    """A plain paho client that records what it receives."""
    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid or user + "-test", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    ready = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (not rc.is_failure) and ready.set()
    c.on_message = lambda cl, u, m: got.append((m.topic, bytes(m.payload), m.retain))
    c.connect(broker.host, broker.port, 10)
    c.loop_start()
    assert ready.wait(10), "client %s did not connect" % user
    c.got = got
    return c


def close(*clients):
    for c in clients:
        c.disconnect()
        c.loop_stop()


def subscribe(c, topic):
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, 1)
    assert done.wait(5)


def bridge_link(hub, broker, **kw):
    user, pw = broker.bridge_credentials()
    return MqttLink(hub, HALL, broker.host, broker.port, user, pw, **kw).start(wait=10)


def test_event_reaches_hub_and_ack_reaches_keypad(broker, keys, rhub):
    link = bridge_link(rhub, broker)
    dev = "KP-0001"
    kp = Keypad(broker.host, broker.port, HALL, dev, keys[dev]).start()
    try:
        seqs = [kp.press(stars) for stars in (5, 4, 1)]
        wait_for(lambda: kp.pending == 0, what="ACKs on the down topic")
        assert sorted(s for d, s in rhub.events if d == dev) == seqs
        assert [rhub.events[(dev, s)].stars for s in seqs] == [5, 4, 1]
        assert kp.acked == set(seqs)
        wait_for(lambda: (dev, True, "mqtt") in rhub.states, what="retained online state")
    finally:
        kp.stop()
        link.stop()
    assert link.stats["up"] >= 3 and link.stats["sent"] >= 3


def test_acl_denies_rogue_and_foreign_topics(broker, keys, rhub):
    link = bridge_link(rhub, broker)
    k1, k2 = "KP-0001", "KP-0002"
    ev = lambda dev, seq: messages.encode(messages.Message(messages.UNSOLICITED, dev, 1, seq, stars=1), keys[dev])  # noqa: E731
    rogue = client(broker, "rogue", "rogue-pw")
    kp1 = client(broker, k1, device_password(keys[k1]), cid=k1)
    kp2 = client(broker, k2, device_password(keys[k2]), cid=k2)
    cases = client(broker, *broker.service_credentials(CASES_USER))
    sms = client(broker, *broker.service_credentials(SMS_USER))
    try:
        subscribe(rogue, "pj/#")
        subscribe(kp1, topics.down(HALL, k2))  # another keypad's commands
        subscribe(kp1, "pj/%s/dev/+/down" % HALL)
        subscribe(kp2, topics.down(HALL, k2))
        subscribe(sms, topics.unrated(HALL))
        subscribe(sms, topics.up(HALL, k1))  # the SMS gateway may not read events
        # a rogue forging a keypad's event, prompting a keypad, faking a state
        rogue.publish(topics.up(HALL, k1), ev(k1, 1), qos=1).wait_for_publish(5)
        rogue.publish(topics.down(HALL, k2), b"\x01\x42 prompt", qos=1).wait_for_publish(5)
        rogue.publish(topics.state(HALL, k2), b"offline", qos=1, retain=True).wait_for_publish(5)
        rogue.publish(topics.cases(HALL), b'{"op":"open"}', qos=1).wait_for_publish(5)
        # keypad 1 on keypad 2's topics (with keypad 2's own valid event), and on its down topic
        kp1.publish(topics.up(HALL, k2), ev(k2, 7), qos=1).wait_for_publish(5)
        kp1.publish(topics.state(HALL, k2), b"offline", qos=1, retain=True).wait_for_publish(5)
        kp1.publish(topics.down(HALL, k2), b"forged command", qos=1).wait_for_publish(5)
        # the case system may publish cases but not events; the gateway reads unrated
        cases.publish(topics.up(HALL, k1), ev(k1, 2), qos=1).wait_for_publish(5)
        # allowed traffic, as a marker that everything above had its chance to arrive
        link.publish(topics.unrated(HALL), b'{"case":"C1"}')
        kp1.publish(topics.up(HALL, k1), ev(k1, 3), qos=1).wait_for_publish(5)
        wait_for(lambda: (k1, 3) in rhub.events, what="the allowed event")
        wait_for(lambda: sms.got, what="unrated to the SMS gateway")
        link.send(k2, b"allowed down")
        wait_for(lambda: any(t == topics.down(HALL, k2) for t, _, _ in kp2.got), what="the bridge's command")
        time.sleep(0.3)
    finally:
        close(rogue, kp1, kp2, cases, sms)
        link.stop()
    assert set(rhub.events) == {(k1, 3)}, "only the keypad's own event on its own topic got through"
    assert rogue.got == [], "the rogue subscribed to pj/# and received nothing"
    assert [p for t, p, _ in kp1.got if t == topics.down(HALL, k2)] == [], "keypad 1 saw nothing of keypad 2's down topic"
    assert [t for t, p, _ in kp1.got] == [topics.down(HALL, k1)], "only the ACK of its own event"
    assert [(t, p) for t, p, _ in kp2.got] == [(topics.down(HALL, k2), b"allowed down")]
    assert [(t, p) for t, p, _ in sms.got] == [(topics.unrated(HALL), b'{"case":"C1"}')]
    assert (k2, False, "mqtt") not in rhub.states
    assert link.stats["cases"] == 0


def test_wrong_password_and_anonymous_refused(broker, keys):
    for user, pw in (("KP-0001", "not-the-password"), (None, None), ("KP-0001", device_password(keys["KP-0002"]))):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv311)
        if user:
            c.username_pw_set(user, pw)
        codes = []
        c.on_connect = lambda cl, u, f, rc, p: codes.append(rc)
        c.connect(broker.host, broker.port, 10)
        end = time.monotonic() + 5
        while not codes and time.monotonic() < end:
            c.loop(0.1)
        c.disconnect()
        assert codes and codes[0].is_failure, (user, codes)


def test_case_topic_handler_and_unrated(broker, keys, rhub):
    got = []
    link = bridge_link(rhub, broker, on_cases=got.append)
    cases = client(broker, *broker.service_credentials(CASES_USER))
    try:
        cases.publish(topics.cases(HALL), b'{"op":"finish","case_no":"C9"}', qos=1)
        wait_for(lambda: got, what="case message")
    finally:
        close(cases)
        link.stop()
    assert got == [b'{"op":"finish","case_no":"C9"}']


def test_last_will_marks_a_dead_keypad_offline(broker, keys, rhub):
    link = bridge_link(rhub, broker)
    dev = "KP-0003"
    p = subprocess.Popen([sys.executable, str(Path(__file__).with_name("mqttkeypad.py")), broker.host, str(broker.port), HALL, dev,
                          keys[dev].hex()], stdout=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert p.stdout.readline().strip() == b"connected"
        wait_for(lambda: (dev, True, "mqtt") in rhub.states, what="online state")
        p.send_signal(signal.SIGKILL)  # the socket dies without DISCONNECT
        p.wait()
        wait_for(lambda: (dev, False, "mqtt") in rhub.states, what="last will -> offline")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    # the offline state is retained: a bridge that connects later learns it too
    link.stop()
    rhub2 = type(rhub)(keys)
    link2 = bridge_link(rhub2, broker, client_id="@bridge-second")
    try:
        wait_for(lambda: (dev, False, "mqtt") in rhub2.states, what="retained offline")
    finally:
        link2.stop()


def test_mismatched_device_on_own_topic_dropped(broker, keys, rhub):
    link = bridge_link(rhub, broker)
    k1, k2 = "KP-0001", "KP-0002"
    kp1 = client(broker, k1, device_password(keys[k1]), cid=k1)
    try:
        other = messages.encode(messages.Message(messages.UNSOLICITED, k2, 1, 5, stars=3), keys[k2])
        kp1.publish(topics.up(HALL, k1), other, qos=1).wait_for_publish(5)
        wait_for(lambda: link.stats["mismatch"] == 1, what="mismatch counted")
    finally:
        close(kp1)
        link.stop()
    assert rhub.events == {}


def test_acl_text_layout():
    t = acl_text("h9", ["KP-2", "KP-1"])
    assert "user %s\ntopic read pj/h9/dev/+/up\ntopic read pj/h9/dev/+/state\ntopic write pj/h9/dev/+/down" % BRIDGE_USER in t
    assert "user KP-1\ntopic write pj/h9/dev/KP-1/up\ntopic write pj/h9/dev/KP-1/state\ntopic read pj/h9/dev/KP-1/down" in t
    assert t.index("user KP-1") < t.index("user KP-2")
    assert "pattern" not in t


def test_deploy_files_match_the_generator():
    from pingjia.bridge.broker import conf_text

    d = ROOT / "deploy" / "mosquitto"
    assert (d / "acl.example").read_text() == acl_text("HALL", ["KP-0001", "KP-0002"])
    assert (d / "mosquitto.conf").read_text() == conf_text("HALL", 1883, "/etc/mosquitto/pingjia/passwd", "/etc/mosquitto/pingjia/acl",
                                                           "/var/lib/mosquitto", bind="0.0.0.0", log_file=None)


def test_render_for_a_system_broker(tmp_path, keys):
    from pingjia.bridge import broker as brk

    tsv = tmp_path / "devices.tsv"
    tsv.write_text("".join("%s %s\n" % (d, k.hex()) for d, k in keys.items()))
    brk.main(["--hall", "h7", "--out", str(tmp_path / "out"), str(tsv)])
    out = tmp_path / "out"
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert sorted(users) == sorted(list(keys) + [BRIDGE_USER, CASES_USER, SMS_USER])
    assert all(line.split(":", 1)[1].startswith("$7$") for line in (out / "passwd").read_text().splitlines())  # hashed
    assert oct((out / "passwd").stat().st_mode & 0o777) == "0o600"
    assert "password_file /etc/mosquitto/pingjia/passwd" in (out / "mosquitto.conf").read_text()
    assert "user KP-0001\ntopic write pj/h7/dev/KP-0001/up" in (out / "acl").read_text()


def test_local_broker_refuses_a_port_in_use(tmp_path, broker):
    from pingjia.bridge.broker import LocalBroker

    other = LocalBroker(tmp_path / "other", HALL, port=broker.port)
    with pytest.raises(RuntimeError, match="another broker there"):
        other.start()
    assert not other.running


def test_reading_pauses_while_the_hub_is_behind(broker, keys, rhub):
    """Backpressure: above max_backlog the transport stops reading until the hub's backlog halves;
    the waiting messages stay in the broker and all arrive afterwards."""
    state = {"backlog": 0}
    rhub.backlog = lambda: state["backlog"]
    link = bridge_link(rhub, broker, max_backlog=10)
    dev = "KP-0004"
    kp = client(broker, dev, device_password(keys[dev]), cid=dev)
    try:
        state["backlog"] = 11  # the hub is behind
        for seq in range(1, 301):
            kp.publish(topics.up(HALL, dev), messages.encode(messages.Message(messages.UNSOLICITED, dev, 1, seq, stars=2), keys[dev]), qos=1)
        wait_for(lambda: link.stats.get("paused"), what="reading paused")
        held = link.stats["up"]
        time.sleep(0.3)
        assert link.stats["up"] == held < 300  # nothing read while paused
        state["backlog"] = 0  # caught up
        wait_for(lambda: len(rhub.events) == 300, what="every event after the pause")
    finally:
        close(kp)
        link.stop()

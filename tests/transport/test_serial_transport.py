"""Serial transport over real pseudo-terminals with pyserial."""
import time

import pytest

from pingjia.bridge.serial_ingest import SerialIngest, is_explicit, open_port, resolve
from pingjia.protocol import framing, messages

from tests.transport.conftest import Pty, wait_for

DEV = "KP-0001"


def event(keys, seq, dev=DEV, stars=5):
    return messages.encode(messages.Message(messages.UNSOLICITED, dev, 1, seq, stars=stars, age_ms=10), keys[dev])


def frame(keys, seq, dev=DEV):
    return framing.encode(event(keys, seq, dev))


@pytest.fixture
def byid(tmp_path):
    d = tmp_path / "serial" / "by-id"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def pty(byid):
    p = Pty(byid / "usb-pingjia_keypad_0001-if00")
    yield p
    p.close()


def start(hub, specs, **kw):
    kw.setdefault("scan_s", 0.1)
    kw.setdefault("backoff_min", 0.05)
    kw.setdefault("backoff_max", 0.2)
    return SerialIngest(hub, specs, **kw).start()


def acks(msgs, keys, dev=DEV):
    out = []
    for raw in msgs:
        m = messages.decode(raw, keys[dev])
        assert m.type == messages.ACK
        out += list(m.seqs)
    return out


def test_frames_reach_hub_and_acks_come_back(rhub, keys, pty, byid):
    ing = start(rhub, [str(byid / "usb-pingjia_*")])
    try:
        wait_for(lambda: ing.links and next(iter(ing.links.values())).stats["opens"], what="port opened")
        pty.write(b"".join(frame(keys, s) for s in (1, 2, 3)))
        got = pty.read_frames(3)
        assert acks(got, keys) == [1, 2, 3]
        assert sorted(rhub.events) == [(DEV, 1), (DEV, 2), (DEV, 3)]
        link = next(iter(ing.links.values()))
        assert link.name == "serial:" + pty.link and link.device_id == DEV
        wait_for(lambda: (DEV, True, link.name) in rhub.states, what="online once the keypad is known")
    finally:
        ing.stop()


def test_text_and_traceback_become_device_log(rhub, keys, pty):
    ing = start(rhub, [pty.link])
    try:
        wait_for(lambda: ing.links and next(iter(ing.links.values())).stats["opens"], what="port opened")
        pty.write(b"MicroPython v1.24.1 on 2024-11-29; Raspberry Pi Pico with RP2040\r\n")
        pty.write(frame(keys, 1))
        assert acks(pty.read_frames(1), keys) == [1]
        tb = (b"Traceback (most recent call last):\r\n"
              b'  File "main.py", line 12, in <module>\r\n'
              b"OSError: [Errno 5] EIO\r\n")
        pty.write(tb[:30])
        pty.write(tb[30:] + frame(keys, 2))
        assert acks(pty.read_frames(1), keys) == [2]
        wait_for(lambda: len(rhub.texts) >= 4, what="text lines")
    finally:
        ing.stop()
    name = "serial:" + pty.link
    assert rhub.texts[0] == (name, None, "MicroPython v1.24.1 on 2024-11-29; Raspberry Pi Pico with RP2040")
    assert rhub.texts[1:4] == [
        (name, DEV, "Traceback (most recent call last):"),
        (name, DEV, '  File "main.py", line 12, in <module>'),
        (name, DEV, "OSError: [Errno 5] EIO"),
    ]
    assert sorted(rhub.events) == [(DEV, 1), (DEV, 2)]


def test_garbage_and_cut_frames_resync(rhub, keys, pty):
    ing = start(rhub, [pty.link], idle_s=0.1)
    try:
        wait_for(lambda: ing.links and next(iter(ing.links.values())).stats["opens"], what="port opened")
        link = ing.links[pty.link]
        f1, f2, f3, f4 = (frame(keys, s) for s in (1, 2, 3, 4))
        bad_crc = bytearray(frame(keys, 9))
        bad_crc[-1] ^= 0xFF
        pty.write(b"\xf5\xf5\x00garbage\xf5\xff\xff" + f1[:20] + f2 + bytes(bad_crc) + b"\x00\x01\x02" + f3)
        time.sleep(0.3)
        pty.write(f4[:25])  # a cut frame: the board reset mid-write
        time.sleep(0.4)  # quiet line: the decoder gives up on it
        pty.write(f4)
        got = acks(pty.read_frames(3), keys)
        assert got == [2, 3, 4]
    finally:
        ing.stop()
    assert sorted(rhub.events) == [(DEV, 2), (DEV, 3), (DEV, 4)]
    assert {code for _, code in rhub.rejected} == {"oversize", "truncated", "crc"}
    assert len(rhub.rejected) == link.stats["errors"]
    assert link.stats["frames"] == 3 and link.stats["errors"] >= 4  # bad length x2, cut f1, bad CRC, cut f4


@pytest.mark.expect_warnings
def test_unplug_mid_frame_then_replug(rhub, keys, pty, caplog):
    ing = start(rhub, [pty.link])
    try:
        wait_for(lambda: ing.links and next(iter(ing.links.values())).stats["opens"], what="port opened")
        link = ing.links[pty.link]
        pty.write(frame(keys, 1))
        assert acks(pty.read_frames(1), keys) == [1]
        pty.write(frame(keys, 2)[:30])  # cable pulled mid-frame
        time.sleep(0.05)
        pty.unplug(remove_link=True)
        wait_for(lambda: (DEV, False, link.name) in rhub.states, what="offline after unplug")
        time.sleep(0.3)  # the reader retries an absent explicit path with backoff
        pty.plug()  # replugged: a new pty behind the same by-id name
        wait_for(lambda: link.stats["opens"] >= 2, what="reopened")
        pty.write(frame(keys, 2) + frame(keys, 3))  # the keypad retransmits its journal
        assert acks(pty.read_frames(2), keys) == [2, 3]
    finally:
        ing.stop()
    assert sorted(rhub.events) == [(DEV, 1), (DEV, 2), (DEV, 3)]
    # online, unplugged, back, and the port closed by stop()
    assert [s[1] for s in rhub.states if s[0] == DEV and s[2] == link.name] == [True, False, True, False]
    warns = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warns) == 1 and "port lost" in warns[0] and "keypad KP-0001 offline" in warns[0]


@pytest.mark.expect_warnings
def test_scanner_finds_new_ports_and_drops_vanished_ones(rhub, keys, byid):
    ing = start(rhub, [str(byid / "usb-pingjia_*")])
    a = b = None
    try:
        assert ing.links == {}
        a = Pty(byid / "usb-pingjia_keypad_0001-if00")
        b = Pty(byid / "usb-pingjia_keypad_0002-if00")
        Pty(byid / "usb-other_vendor-if00").close()  # does not match the glob
        opened = lambda n: len(ing.links) == n and all(l.stats["opens"] for l in list(ing.links.values()))  # noqa: E731
        wait_for(lambda: opened(2), what="both ports picked up and opened")
        a.write(frame(keys, 1, "KP-0001"))
        b.write(frame(keys, 1, "KP-0002"))
        assert acks(a.read_frames(1), keys, "KP-0001") == [1]
        assert acks(b.read_frames(1), keys, "KP-0002") == [1]
        assert ing.link_for("KP-0002").path == b.link
        b.unplug(remove_link=True)  # unplugged for good: its reader ends
        wait_for(lambda: len(ing.links) == 1, what="reader of the vanished port ended")
        b.plug()  # plugged in again later
        wait_for(lambda: opened(2), what="picked up again")
        b.write(frame(keys, 2, "KP-0002"))
        assert acks(b.read_frames(1), keys, "KP-0002") == [2]
    finally:
        ing.stop()
        for p in (a, b):
            if p:
                p.close()
    assert ing.links == {} or all(not l.thread.is_alive() for l in ing.links.values())
    assert sorted(rhub.events) == [("KP-0001", 1), ("KP-0002", 1), ("KP-0002", 2)]


def test_open_port_keeps_dtr_low_and_is_exclusive(pty):
    s = open_port(pty.link)
    try:
        assert s.dtr is False and s.rts is False and s.is_open
        with pytest.raises(Exception):
            open_port(pty.link)  # a second bridge (or a stray terminal) cannot steal the keypad
    finally:
        s.close()


def test_resolve_specs(byid, tmp_path):
    p1 = Pty(byid / "usb-pingjia_keypad_0001-if00")
    try:
        got = resolve([str(byid / "usb-pingjia_*"), str(tmp_path / "absent"), "ffff:fffe"])
        assert got == {p1.link: str(byid / "usb-pingjia_*"), str(tmp_path / "absent"): str(tmp_path / "absent")}
        assert is_explicit("/dev/ttyACM0") and not is_explicit("2e8a:0005") and not is_explicit("/dev/serial/by-id/*")
    finally:
        p1.close()


def test_send_on_a_closed_port_is_counted_not_raised(rhub, keys, pty):
    ing = start(rhub, [pty.link])
    try:
        wait_for(lambda: ing.links and next(iter(ing.links.values())).stats["opens"], what="port opened")
        link = ing.links[pty.link]
    finally:
        ing.stop()
    assert link.send(DEV, event(keys, 1)) is False
    assert link.stats["send_dropped"] == 1


def test_usb_id_spec_finds_the_port(monkeypatch, rhub, keys, byid):
    """A keypad named by USB vendor:product (no USB device can exist here: comports() is faked,
    the port behind it is a real pty)."""
    import serial.tools.list_ports as lp

    p = Pty(byid / "usb-Raspberry_Pi_Pico_E6614C775B-if00")

    class Info:
        def __init__(self, device, vid, pid):
            self.device, self.vid, self.pid = device, vid, pid

    monkeypatch.setattr(lp, "comports", lambda: [Info("/dev/ttyS0", None, None), Info(p.link, 0x2E8A, 0x0005)])
    try:
        assert resolve(["2e8a:0005", "usb:2E8A:0005", "1a86:7523"]) == {p.link: "2e8a:0005"}
        ing = start(rhub, ["2e8a:0005"])
        try:
            wait_for(lambda: ing.links and next(iter(ing.links.values())).stats["opens"], what="port opened")
            p.write(frame(keys, 1))
            assert acks(p.read_frames(1), keys) == [1]
        finally:
            ing.stop()
    finally:
        p.close()

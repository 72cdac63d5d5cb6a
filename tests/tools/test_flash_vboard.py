"""Flash, verify, reset and first HELLO against the virtual board (real MicroPython on a pty, real mpremote):
success, a power cut mid-copy and a retry that resumes, wrong boards, configs the firmware rejects, batch flash."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pingjia.tools import flash as fl
from pingjia.tools.cli import main


def _device(db, device_id):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    conn.close()
    return row


def _board_config(port):
    b = fl.Board(port)
    try:
        return b.read_json(fl.CONFIG_PATH)
    finally:
        b.close()


def test_flash_one_board(vboards, bridge_db, caplog):
    (vb,) = vboards(1)
    r = CliRunner().invoke(main, ["flash", vb.port, "--window", "W02", "--db", bridge_db])
    assert r.exit_code == 0, r.output
    assert "done" in r.output and "KP-0001" in r.output and "1 done, 0 failed" in r.output
    row = _device(bridge_db, "KP-0001")
    assert row["window_id"] == "W02" and row["fw_version"] == "1.0.0" and row["board"] == "virtual"
    cfg = _board_config(vb.port)
    assert cfg["device_id"] == "KP-0001" and cfg["window"] == "W02" and cfg["key"] == row["key_hex"]
    assert row["key_hex"] not in r.output and row["key_hex"] not in caplog.text  # never printed or logged
    # the next unit gets the next id; the same board again is refused without --force
    r = CliRunner().invoke(main, ["flash", vb.port, "--db", bridge_db])
    assert r.exit_code == 1 and "already provisioned as KP-0001" in r.output


def test_power_cut_mid_copy_then_retry_resumes(vboards, bridge_db, image):
    (vb,) = vboards(1)

    def cut(stage, done=0, total=0):
        if stage == "copy" and done == 8:
            vb.power_cut()

    r = fl.flash_board(vb.port, bridge_db, image, "KP-0007", "W01", progress=cut)
    assert not r.ok
    assert "lost contact with the board on %s while writing" % vb.port in r.reason and "flash it again to resume" in r.reason
    assert _device(bridge_db, "KP-0007") is None  # nothing registered for a board that never said HELLO
    vb.start()
    r = fl.flash_board(vb.port, bridge_db, image, "KP-0007", "W01")
    assert r.ok, r.reason
    assert r.skipped >= 7 and r.written + r.skipped == len(image.files) + 1  # resumed: verified files kept
    assert _device(bridge_db, "KP-0007")["window_id"] == "W01"


def test_not_a_micropython_board(tmp_path, bridge_db, image):
    """A CPython REPL on a serial line answers, but not with a raw REPL."""
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-q", "-i"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    try:
        r = fl.flash_board(os.ttyname(slave), bridge_db, image, "KP-0001", "W01")
    finally:
        p.kill()
        p.wait()
        os.close(master)
        os.close(slave)
    assert not r.ok and "no MicroPython raw REPL on" in r.reason
    r = fl.flash_board("/dev/nonexistent-board", bridge_db, image, "KP-0001", "W01")
    assert not r.ok and r.reason.startswith("cannot open /dev/nonexistent-board")


def test_board_that_cannot_load_the_firmware(vboards, bridge_db, image):
    (vb,) = vboards(1)
    old = fl.Image(image.version, [(p, d[:1] + b"\x05" + d[2:]) if p.endswith(".mpy") else (p, d) for p, d in image.files])
    r = fl.flash_board(vb.port, bridge_db, old, "KP-0001", "W01")
    assert not r.ok and "which loads .mpy v6; the firmware is compiled as v5" in r.reason


def test_config_rejected_before_touching_the_board(vboards, bridge_db):
    (vb,) = vboards(1)
    r = CliRunner().invoke(main, ["flash", vb.port, "--transport", "mqtt", "--hall", "h1", "--db", bridge_db])  # no broker
    assert r.exit_code == 1 and "the firmware would reject this config: mqtt needs broker.host and hall" in r.output
    r = CliRunner().invoke(main, ["flash", vb.port, "--set", "journal_cap=5", "--db", bridge_db])
    assert r.exit_code == 1 and "journal_cap must be 10..5000" in r.output
    r = CliRunner().invoke(main, ["flash", vb.port, "--window", "W99", "--db", bridge_db])
    assert r.exit_code == 1 and "window W99 is not known" in r.output
    assert _board_config(vb.port) is None  # nothing was written


def test_config_rejected_by_the_firmware_on_the_board(vboards, bridge_db, image):
    """A config the host-side check would stop, put on the board anyway: the keypad's signed STATUS says why."""
    (vb,) = vboards(1)
    key = os.urandom(32)
    bad = {"device_id": "KP-0003", "key": key.hex(), "transport": "mqtt", "hall": "", "window": "W01"}
    board = fl.Board(vb.port)
    res = fl.Result(vb.port)
    try:
        fl._install(board, image, [(fl.CONFIG_PATH, json.dumps(bad).encode())], None)
        with pytest.raises(fl.FlashError, match="the firmware rejected its config: mqtt needs broker.host and hall"):
            fl._boot_and_hello(board, "KP-0003", key, image, res, 30, None)
    finally:
        board.close()


def test_batch_flash(vboards, bridge_db):
    boards = vboards(3)
    ports = [vb.port for vb in boards]
    r = CliRunner().invoke(main, ["flash-all", *ports, "--windows", "W01,W02,W03", "--db", bridge_db])
    assert r.exit_code == 0, r.output
    assert "3 done, 0 failed" in r.output
    got = {_device(bridge_db, d)["window_id"] for d in ("KP-0001", "KP-0002", "KP-0003")}
    assert got == {"W01", "W02", "W03"}
    for port, line in zip(ports, [ln for ln in r.output.splitlines() if ln.startswith("/dev/")]):
        assert line.split()[:2] == [port, "done"]
    r = CliRunner().invoke(main, ["flash-all", *ports[:2], "--windows", "W01", "--db", bridge_db])
    assert r.exit_code == 1 and "--windows names 1 windows for 2 boards" in r.output


MQTT = dict(transport="mqtt", hall="h1", wifi={"ssid": "hall", "password": "pw"}, broker={"host": "127.0.0.1", "port": 1})


def test_mqtt_keypad_registered_before_its_hello(vboards, bridge_db, image):
    """An MQTT keypad says HELLO to the bridge over Wi-Fi, so it is registered before the reset. The virtual
    board has no network: the flash reports that, and the keypad stays registered (it comes online later)."""
    (vb,) = vboards(1)
    r = fl.flash_board(vb.port, bridge_db, image, "KP-0004", "W04", hello_timeout=3, **MQTT)
    assert not r.ok and r.reason.startswith("no signed HELLO within 3s")
    assert "KP-0004 is registered and comes online by itself" in r.reason
    row = _device(bridge_db, "KP-0004")
    assert row["transport"] == "mqtt" and row["window_id"] == "W04" and len(row["key_hex"]) == 64
    # (not read back from the board here: the virtual board keeps kbd_intr off and an MQTT keypad does not read
    # its USB port, so nothing can interrupt it for a raw REPL until it is reset; reported to the firmware area)


def test_bridge_hello_poll(bridge_db):
    """What the flash tool waits for on an MQTT keypad: the bridge recording a HELLO of a new boot."""
    from pingjia.bridge import devices
    from pingjia.bridge.store import Store

    conn = Store(bridge_db).connect()
    devices.add(conn, "KP-0009", window_id="W01", transport="mqtt")
    poll = fl.bridge_hello(bridge_db, "KP-0009")
    assert poll() is None
    conn.execute("UPDATE devices SET boot = 1, fw_version = '1.0.0', board = 'esp32' WHERE device_id = 'KP-0009'")
    got = poll()
    assert (got.fw, got.board, got.boot) == ("1.0.0", "esp32", 1)
    assert fl.bridge_hello(bridge_db, "KP-0009")() is None  # boot 1 was already known: wait for the next
    conn.close()

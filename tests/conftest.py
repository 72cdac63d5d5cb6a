"""Shared test fixtures. Area fixtures live in tests/<area>/conftest.py."""
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MPRUN = ROOT / "firmware" / "virtual" / "mprun.mjs"


@pytest.fixture(autouse=True)
def _fail_on_unexpected_warnings(caplog, request):
    """A test fails when code logs WARNING or worse unless it is marked
    `expect_warnings` (and then asserts the ones it expects)."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("expect_warnings"):
        return
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if bad:
        pytest.fail("unexpected log: " + "; ".join("%s %s: %s" % (r.levelname, r.name, r.getMessage()) for r in bad[:5]))


def pytest_configure(config):
    config.addinivalue_line("markers", "expect_warnings: the test expects WARNING logs and checks them itself")


def run_micropython(script, *args, libs=("protocol",), files=(), timeout=120):
    """Run `script` under real MicroPython (WebAssembly on Node); return stdout text.

    `libs` are repo folders copied to /lib/pingjia/<name> on the virtual device.
    """
    if not shutil.which("node"):
        pytest.fail("node is required to run MicroPython (install Node 20)")
    cmd = ["node", str(MPRUN)]
    for lib in libs:
        cmd += ["--lib", str(ROOT / lib)]
    for host, dev in files:
        cmd += ["--file", "%s:%s" % (host, dev)]
    cmd += [str(script), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if p.returncode != 0:
        raise AssertionError("MicroPython run failed (%d):\n%s\n%s" % (p.returncode, p.stdout[-2000:], p.stderr[-4000:]))
    return p.stdout


@pytest.fixture
def micropython():
    return run_micropython

"""The firmware scenarios (tests/firmware/scenarios.py) on CPython and on real MicroPython 1.29."""
import re

import pytest

from tests.conftest import ROOT
from tests.firmware import scenarios

HERE = ROOT / "tests" / "firmware"
NAMES = sorted(n for n in dir(scenarios) if n.startswith("t_") and n != "t_frames_hex")


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
    scenarios.TMP[0] = str(tmp_path) + "/"


@pytest.mark.parametrize("name", NAMES)
def test_cpython(name):
    getattr(scenarios, name)()


@pytest.fixture(scope="module")
def mp_results():
    from tests.conftest import run_micropython

    out = run_micropython(HERE / "scenarios.py", libs=("protocol", "firmware"),
                          files=((HERE / "fakeboard.py", "/lib/fakeboard.py"),), timeout=600)
    res = {}
    for line in out.splitlines():
        m = re.match(r"(PASS|FAIL) (t_\w+):?(.*)", line)
        if m:
            res[m.group(2)] = (m.group(1), m.group(3).strip())
    return res, out


@pytest.mark.parametrize("name", NAMES)
def test_micropython(name, mp_results):
    res, out = mp_results
    assert name in res, "scenario did not run under MicroPython:\n" + out[-2000:]
    assert res[name][0] == "PASS", res[name][1]


def test_micropython_frames_decode_with_host_protocol(mp_results):
    """Frames the firmware wrote under MicroPython decode with CPython's protocol code."""
    from pingjia.protocol import framing, messages as M

    _res, out = mp_results
    line = [x for x in out.splitlines() if x.startswith("FRAME ")][0]
    items = framing.Decoder().feed(bytes.fromhex(line[6:]))
    assert all(k == framing.FRAME for k, _v in items)
    msgs = [M.decode(v, scenarios.KEY) for _k, v in items]
    types = [m.type for m in msgs]
    assert types[:2] == [M.HELLO, M.STATUS]
    ratings = [m for m in msgs if m.type == M.RATING]
    assert ratings[0].stars == 1 and ratings[0].token == "C7K2M9QX" and ratings[0].nth == 1
    reasons = [m for m in msgs if m.type == M.REASON]
    assert reasons and reasons[0].ref_seq in {r.seq for r in ratings}

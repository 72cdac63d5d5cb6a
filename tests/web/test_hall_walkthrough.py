"""docs/HALL_IT.md end to end, with the same commands: a virtual board flashed with `pingjia flash`, the bridge
(`pingjia run`) on its port, the status page in headless Chromium showing it online, a case finished, a key
pressed on the board (`pingjia vboard` stdin), the rating on the page without reload, then the board unplugged."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PINGJIA = str(Path(sys.executable).parent / "pingjia")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pj(env, *args, timeout=120):
    p = subprocess.run([PINGJIA, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "pingjia %s failed:\n%s\n%s" % (" ".join(args), p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


@pytest.fixture
def vboard_cli(tmp_path):
    """`pingjia vboard --flash DIR` as a newcomer runs it; yields (port, process)."""
    p = subprocess.Popen([PINGJIA, "vboard", "--flash", str(tmp_path / "vboard1")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = p.stdout.readline()
    assert line.startswith("port: "), line
    yield line.split()[1], p
    if p.poll() is None:
        p.terminate()
        p.wait(timeout=30)


def test_newcomer_walkthrough(tmp_path, vboard_cli, browser, shot):
    port, board = vboard_cli
    http = _free_port()
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[bridge]\ndb = "%s"\nhall = "demo"\nhttp_listen = "127.0.0.1:%d"\n'
                   '[serial]\nports = ["%s"]\n[mqtt]\nenabled = false\n' % (tmp_path / "pingjia.db", http, port))
    env = {**os.environ, "PINGJIA_CONFIG": str(cfg)}
    _pj(env, "windows", "add", "W01", "--name", "综合受理窗口")
    out = _pj(env, "flash", port, "--window", "W01")
    assert "1 done, 0 failed" in out
    bridge = subprocess.Popen([PINGJIA, "run"], env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        for _ in range(100):
            try:
                page.goto("http://127.0.0.1:%d/" % http)
                break
            except Exception:
                page.wait_for_timeout(200)
        page.wait_for_selector('#windows .win[data-window="W01"][data-state="ok"]', timeout=60000)
        shot(page, "walkthrough-1-online")
        page.evaluate("window.__noReload = 1")
        _pj(env, "cases", "open", "BJ-0001", "--window", "W01", "--task-name", "营业执照变更")
        _pj(env, "cases", "finish", "BJ-0001")
        page.wait_for_selector('#windows .win[data-window="W01"] .prompting', timeout=30000)
        board.stdin.write("5\n")
        board.stdin.flush()
        page.wait_for_selector('#ratings tr[data-project="BJ-0001"]', timeout=30000)
        assert "非常满意" in page.text_content('#ratings tr[data-project="BJ-0001"]')
        assert page.text_content("#k-rated") == "1" and page.text_content("#k-sat") == "100.0%"
        assert page.evaluate("window.__noReload") == 1
        shot(page, "walkthrough-2-rated")
        board.terminate()  # Ctrl-C in the vboard terminal: the board is unplugged
        board.wait(timeout=30)
        page.wait_for_selector('#alerts .alert[data-window="W01"][data-state="offline"]', timeout=60000)
        assert "离线" in page.text_content('#windows .win[data-window="W01"] .pill')
        shot(page, "walkthrough-3-unplugged")
        page.close()
    finally:
        bridge.terminate()
        bridge.wait(timeout=60)

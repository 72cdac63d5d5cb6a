"""The virtual board: real MicroPython on a pty, flashed and reset with the real mpremote, keys and LEDs through the side channel."""
import hashlib
import json
import subprocess
import sys

from pingjia.protocol import messages

from vboard_helpers import Console, flash, mpremote, staged_files

HASH_ALL = """
import hashlib, binascii, json
def h(p):
    d = hashlib.sha256()
    with open(p, 'rb') as f:
        d.update(f.read())
    return binascii.hexlify(d.digest()).decode()
print(json.dumps({p: h(p) for p in %r}))
"""


def boot_log(con, n):
    """Wait for the LOG frame 'boot n cause c'; returns c (machine.reset_cause())."""
    m = con.wait_frame(lambda m: m.type == messages.LOG and m.text.startswith("boot %d " % n), what="boot %d" % n)
    return int(m.text.split()[-1])


def test_mpremote_copies_files_and_hashes_match(board, stage):
    flash(board, stage)
    want = staged_files(stage)
    assert any(p.endswith(".mpy") for p in want)
    got = json.loads(mpremote(board.port, "exec", HASH_ALL % sorted(want)).strip())
    assert got == want
    # mpremote's own hash command on a binary .mpy
    out = mpremote(board.port, "fs", "sha256sum", ":lib/pingjia/protocol/framing.mpy")
    assert want["/lib/pingjia/protocol/framing.mpy"] in out
    # and the files are in the host flash directory byte for byte
    for path, digest in want.items():
        assert hashlib.sha256((board.flash_dir / path.lstrip("/")).read_bytes()).hexdigest() == digest


def test_mpremote_reset_boots_main_and_frames_decode_on_host(board, stage):
    flash(board, stage)
    with Console(board.port) as con:  # opened first: nothing the new boot sends is missed
        mpremote(board.port, "reset")
        hello = con.wait_frame(lambda m: m.type == messages.HELLO, what="HELLO")
        assert (hello.device_id, hello.fw, hello.board, hello.boot) == ("VB-TEST", "vtest", "virtual", 1)
        assert boot_log(con, 1) == 2  # machine.HARD_RESET
    assert board.state()["mode"] == "app"


def test_keys_reach_the_app_and_leds_and_beeps_read_back(flashed):
    vb = flashed
    with Console(vb.port) as con:
        vb.press(3)
        vb.wait_for(lambda s: s["leds"] == 0b100, what="LED of key 3")
        m = con.wait_frame(lambda m: m.type == messages.UNSOLICITED, what="press frame")
        assert (m.stars, m.seq) == (3, 1)
        s = vb.state()
        assert s["beep"]["count"] == 1 and s["beep"]["freq"] == 2200
        vb.release(3)
        vb.wait_for(lambda s: s["leds"] == 0, what="LEDs off")
        vb.tap(5, 60)
        m = con.wait_frame(lambda m: m.type == messages.UNSOLICITED and m.stars == 5, what="tap frame")
        assert m.seq == 2
        s = vb.wait_for(lambda s: s["leds"] == 0, what="LEDs off after tap")
        assert [t_mask[1] for t_mask in s["led_log"]][-4:] == [0b100, 0, 0b10000, 0]
        assert [t_keys[1] for t_keys in s["key_log"]] == [0b100, 0, 0b10000, 0]
        # same clock: each LED change comes after the key change that caused it
        assert all(k[0] <= led[0] for k, led in zip(s["key_log"], s["led_log"][-4:]))
        # bytes from the host reach the app's read(); its echo comes back as a frame
        con.write(b"hello\n")
        con.wait_frame(lambda m: m.type == messages.LOG and m.text == "echo hello", what="echo")


def test_ctrl_c_drops_to_repl_and_soft_reset_reruns_main(flashed):
    vb = flashed
    with Console(vb.port) as con:
        con.write(b"\x03")
        con.wait(lambda: b"KeyboardInterrupt" in con.raw and con.raw.endswith(b">>> "), what="REPL prompt")
        assert b"app stopped" in con.raw  # main.py's finally ran after asyncio.run ended
    assert vb.state()["mode"] == "repl"
    assert mpremote(vb.port, "exec", "print(6 * 7)").strip() == "42"
    with Console(vb.port) as con:
        # what the flashing tool does after copying: leave the raw REPL, Ctrl-D soft reset
        con.write(b"\r\x02")
        con.write(b"\x04")
        assert boot_log(con, 2) == 5  # machine.SOFT_RESET
    assert vb.state()["mode"] == "app"


def test_mpremote_interrupts_a_running_app(flashed):
    vb = flashed
    assert vb.state()["mode"] == "app"
    out = mpremote(vb.port, "exec", "import os; print(sorted(os.listdir('/')))")
    assert out.strip() == "['boots.txt', 'lib', 'main.py']"
    assert vb.state()["mode"] == "repl"  # mpremote leaves the raw REPL with Ctrl-B when done


def test_file_written_by_the_app_survives_power_cut(flashed):
    vb = flashed
    assert (vb.flash_dir / "boots.txt").read_text() == "boot 1 cause 2\n"
    with Console(vb.port) as con:  # the port outlives the power cut
        vb.power_cut()
        vb.start()
        assert boot_log(con, 2) == 1  # machine.PWRON_RESET: it read the file written before the cut
    assert (vb.flash_dir / "boots.txt").read_text() == "boot 1 cause 2\nboot 2 cause 1\n"


def test_watchdog_resets_a_hung_app(flashed):
    vb = flashed
    with Console(vb.port) as con:
        con.write(b"hang\n")  # the app spins without yielding or feeding
        assert boot_log(con, 2) == 3  # machine.WDT_RESET
    s = vb.state()
    assert s["cause"] == "wdt" and s["mode"] == "app"


IDLE_APPS = {
    # an asyncio app that never reads the console: Ctrl-C must still end it (kbd_intr is on)
    "asyncio": "import asyncio\nasync def main():\n    print('running')\n    while True:\n        await asyncio.sleep_ms(10)\n"
               "asyncio.run(main())\n",
    # a plain loop with time.sleep_ms: the same, as on a board
    "sleep loop": "import time\nprint('running')\nwhile True:\n    time.sleep_ms(10)\n",
}


def test_ctrl_c_interrupts_apps_that_leave_kbd_intr_on(board, tmp_path):
    for name, src in IDLE_APPS.items():
        (tmp_path / "main.py").write_text(src)
        with Console(board.port) as con:
            mpremote(board.port, "fs", "cp", str(tmp_path / "main.py"), ":main.py", "+", "reset")
            con.wait(lambda: b"running" in con.raw, what="%s app running" % name)
        assert board.state()["mode"] == "app", name
        # mpremote's own Ctrl-C ends the endless app; the Ctrl-A right behind it reaches the REPL
        assert mpremote(board.port, "exec", "print('in repl')").strip() == "in repl", name


def test_flash_directory_follows_remove_rename_mkdir(board):
    out = mpremote(board.port, "exec", "\n".join([
        "import os",
        "os.mkdir('/d')",
        "with open('/d/a.bin', 'wb') as f:\n    f.write(bytes(range(256)))",
        "os.rename('/d/a.bin', '/d/b.bin')",
        "with open('/d/b.bin', 'ab') as f:\n    f.write(b'!')",
        "os.mkdir('/gone')",
        "os.rmdir('/gone')",
        "with open('/x.txt', 'w') as f:\n    f.write('x')",
        "with open('/long.txt', 'w') as f:\n    f.write('a much longer first version')",
        "with open('/long.txt', 'w') as f:\n    f.write('short')",
        "os.remove('/x.txt')",
        "try:\n    os.stat('/x.txt')\nexcept OSError as e:\n    import errno\n    print(e.errno == errno.ENOENT)",
    ]))
    assert out.strip() == "True"  # errno values are the usual ones (ENOENT = 2), not Emscripten's
    root = board.flash_dir
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["d", "d/b.bin", "long.txt"]
    assert (root / "long.txt").read_text() == "short"  # open('w') truncates on the host too
    assert (root / "d" / "b.bin").read_bytes() == bytes(range(256)) + b"!"


def test_cli_runs_one_board_and_prints_its_port(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "pingjia.tools.vboard", "--flash", str(tmp_path / "flash")],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("port: /dev/pts/"), line
        port = line.split()[1]
        assert mpremote(port, "exec", "import sys; print(sys.implementation.name)").strip() == "micropython"
    finally:
        p.terminate()
        assert p.wait(timeout=30) == 0


def test_ctrl_c_interrupts_code_typed_at_the_repl(board):
    board.wait_for(lambda s: s["mode"] == "repl", what="REPL (empty flash)")
    with Console(board.port) as con:
        con.write(b"\r")
        con.wait(lambda: con.raw.endswith(b">>> "), what="prompt")
        con.write(b"import time; time.sleep(600)\r")
        con.wait(lambda: b"time.sleep(600)\r\n" in con.raw, what="echo of the line")
        con.write(b"\x03")
        con.wait(lambda: b"KeyboardInterrupt" in con.raw and con.raw.endswith(b">>> "), what="interrupted")
        con.write(b"print(40 + 2)\r")
        con.wait(lambda: b"42\r\n>>> " in con.raw, what="REPL still works")


def test_input_sent_while_the_board_is_off_never_reaches_it(board):
    board.wait_for(lambda s: s["mode"] == "repl", what="REPL (empty flash)")
    board.power_cut()
    with Console(board.port) as con:
        con.write(b"open('/stale', 'w').close()\r")  # typed into a dead board
    board.start()
    assert mpremote(board.port, "exec", "import os; print(os.listdir('/'))").strip() == "[]"


def test_the_clock_is_an_unset_rtc_not_the_host_clock(board):
    out = mpremote(board.port, "exec", "import time; print(time.localtime()[:3], time.time() < 1609459200 + 3600)")
    assert out.strip() == "(2021, 1, 1) True"

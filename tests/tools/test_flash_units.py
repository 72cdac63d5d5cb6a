"""Flash pieces that need no board: the compiled image, the config, and HELLO detection over a real pty."""
import os
import shutil

import pytest
import serial

from pingjia.protocol import framing, messages
from pingjia.tools import flash as fl
from tests.conftest import ROOT

KEY = bytes(range(32))


@pytest.fixture
def src_tree(tmp_path):
    shutil.copytree(ROOT / "protocol", tmp_path / "protocol", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "firmware" / "virtual").mkdir(parents=True)
    (tmp_path / "firmware" / "__init__.py").write_text("")
    (tmp_path / "firmware" / "version.py").write_text('VERSION = "1.2.3"\n')
    (tmp_path / "firmware" / "main.py").write_text("import pingjia.firmware\n")
    (tmp_path / "firmware" / "virtual" / "host_only.py").write_text("x = 1\n")
    return tmp_path


def test_image_is_mpy_under_lib_with_main_py(src_tree):
    img = fl.build_image(src_tree)
    paths = img.paths()
    assert img.version == "1.2.3"
    assert "/main.py" in paths and "/lib/pingjia/protocol/messages.mpy" in paths
    assert "/lib/pingjia/firmware/version.mpy" in paths
    assert not any("virtual" in p or p.endswith(".py") and p not in ("/main.py", "/lib/pingjia/__init__.py") for p in paths)
    assert all(d[:1] == b"M" for p, d in img.files if p.endswith(".mpy"))
    assert img.mpy_version == 6


def test_image_reports_a_syntax_error(src_tree):
    (src_tree / "firmware" / "broken.py").write_text("def (:\n")
    with pytest.raises(fl.FlashError, match="mpy-cross failed on broken.py"):
        fl.build_image(src_tree)


def test_config_checks():
    cfg = fl.make_config("KP-0001", KEY, "W01", "serial", "hall1")
    assert cfg["key"] == KEY.hex() and cfg["window"] == "W01"
    mqtt = fl.make_config("KP-0001", KEY, "W01", "mqtt", "hall1", broker={"host": "10.0.0.2", "port": 1883})
    assert "password" not in mqtt["broker"]  # both sides derive it from the key
    # the firmware's own validator (pingjia.firmware.config) judges the config before any board is touched
    for kw, why in [(dict(transport="mqtt"), "mqtt needs broker.host and hall"),
                    (dict(transport="lora"), "transport must be serial or mqtt"),
                    (dict(settings={"heartbeat_s": 1}), "heartbeat_s must be 5..3600")]:
        with pytest.raises(fl.FlashError, match="the firmware would reject this config: " + why):
            fl.make_config("KP-0001", KEY, "W01", **kw)
    with pytest.raises(fl.FlashError, match="device_id missing or invalid"):
        fl.make_config("KP 0001!", KEY)


def _pty():
    master, slave = os.openpty()
    return master, serial.Serial(os.ttyname(slave), timeout=0.1), slave


def test_wait_hello_skips_noise_and_wrong_keys():
    master, ser, slave = _pty()
    other = messages.encode(messages.Message(messages.HELLO, "KP-0001", 1, 0, fw="0.9", board="x"), bytes(32))
    good = messages.encode(messages.Message(messages.HELLO, "KP-0001", 2, 0, fw="1.2.3", board="virtual"), KEY)
    os.write(master, b"MicroPython v1.29 boot\r\n" + framing.encode(other) + b"\xf5garbage\r\n" + framing.encode(good))
    log = []
    msg = fl.wait_hello(ser, "KP-0001", KEY, timeout=10, log=log)
    assert (msg.fw, msg.board, msg.boot) == ("1.2.3", "virtual", 2)
    assert "frame rejected: mac" in log and any("boot" in ln for ln in log)
    ser.close(); os.close(master); os.close(slave)


def test_wait_hello_config_error_and_timeout():
    master, ser, slave = _pty()
    st = messages.encode(messages.Message(messages.STATUS, "KP-0001", 1, 0, flags=messages.ST_CONFIG_ERROR,
                                          last_error="bad window"), KEY)
    os.write(master, framing.encode(st))
    with pytest.raises(fl.FlashError, match="rejected its config: bad window"):
        fl.wait_hello(ser, "KP-0001", KEY, timeout=10)
    os.write(master, b"Traceback (most recent call last):\r\n  File \"main.py\", line 1\r\nImportError: no module named 'x'\r\n")
    with pytest.raises(fl.FlashError, match="crashed at boot: ImportError"):
        fl.wait_hello(ser, "KP-0001", KEY, timeout=10)
    with pytest.raises(fl.FlashError, match="no signed HELLO within 0.3s"):
        fl.wait_hello(ser, "KP-0001", KEY, timeout=0.3)
    ser.close(); os.close(master); os.close(slave)

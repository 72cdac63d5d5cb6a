"""The whole service as systemd runs it: `pingjia run` with its embedded Mosquitto, a keypad
over MQTT (per-device credentials), the case API over HTTP, SIGTERM."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pingjia.protocol import messages as m
from tests.bridge.test_service_cli import PINGJIA, run
from tests.transport.mqttkeypad import Keypad as MqttKeypad


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _until(pred, timeout=30):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met"
        time.sleep(0.05)


def test_service_mqtt_keypad_rates_a_case(tmp_path):
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is required (apt-get install mosquitto)")
    http_port, mqtt_port = _free_port(), _free_port()
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[bridge]\ndb = "%s"\nhall = "e2e"\nhttp_listen = "127.0.0.1:%d"\n[serial]\nenabled = false\n'
                   '[mqtt]\nembedded = true\nport = %d\n[cases]\nprompt_timeout_s = 30\n' % (tmp_path / "var" / "b.db", http_port, mqtt_port))
    env = {"PINGJIA_CONFIG": str(cfg)}
    key = os.urandom(32)
    assert run("windows", "add", "W07", "--name", "七号窗口", env=env).returncode == 0
    assert run("device", "add", "KP-0007", "--window", "W07", "--transport", "mqtt", "--key-hex", key.hex(), env=env).returncode == 0
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    proc = subprocess.Popen([PINGJIA, "run"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "NOTIFY_SOCKET": sock_path, "PYTHONFAULTHANDLER": "1"})
    kp = None
    try:
        assert sock.recv(4096).startswith(b"READY=1")
        kp = MqttKeypad("127.0.0.1", mqtt_port, "e2e", "KP-0007", key).start()
        base = "http://127.0.0.1:%d" % http_port

        def online():
            with urllib.request.urlopen(base + "/api/status", timeout=10) as r:
                return json.loads(r.read())["summary"]["online"] == 1

        _until(online)  # the keypad's retained "online" reached the bridge
        _post(base + "/api/cases", {"project_no": "E2E-1", "window_id": "W07", "clerk_name": "赵六"})
        case = _post(base + "/api/cases/E2E-1/finish", {})
        _until(lambda: any(c.type == m.PROMPT for c in kp.commands))
        prompt = [c for c in kp.commands if c.type == m.PROMPT][0]
        assert prompt.token == case["token"] and prompt.timeout_s == 30
        seq = kp.press(4, token=prompt.token)
        _until(lambda: seq in kp.acked)  # ACK arrives only after the bridge committed the rating
        with urllib.request.urlopen(base + "/api/cases/E2E-1", timeout=10) as r:
            got = json.loads(r.read())
        assert got["state"] == "rated" and got["rating"]["stars"] == 4
        with urllib.request.urlopen(base + "/api/status", timeout=10) as r:
            st = json.loads(r.read())
        assert st["keypads"][-1]["device_id"] == "KP-0007" and st["keypads"][-1]["online"] is True
        kp.stop()
        kp = None
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        assert rc == 0, proc.stderr.read()[-3000:]
    finally:
        if kp is not None:
            kp.stop()
        if proc.poll() is None:
            proc.kill()
        sock.close()
    err = proc.stderr.read()
    assert "embedded mosquitto started" in err and "flushed=True" in err and "Traceback" not in err
    broker_pid = tmp_path / "var" / "mosquitto"
    assert broker_pid.is_dir()

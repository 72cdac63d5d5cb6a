"""The CLI and the service as a user runs them: subprocesses, a real config file, sd_notify on a real socket."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click

from pingjia.bridge import config
from pingjia.tools.cli import main as cli_main
from tests.bridge.conftest import ROOT_DIR

PINGJIA = str(Path(sys.executable).parent / "pingjia")


def run(*args, cwd=None, env=None, timeout=60):
    return subprocess.run([PINGJIA, *args], capture_output=True, text=True, cwd=cwd or ROOT_DIR, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_invalid_config_exits_2_naming_every_problem(tmp_path):
    bad = tmp_path / "bridge.toml"
    bad.write_text('[bridge]\nhall = "大厅 1"\nhttp_listen = "nowhere"\ncolour = "red"\n'
                   '[cases]\ngrace_s = "three"\nprompt_timeout_s = 1\n[serial]\nports = "ttyACM0"\n[extras]\n'
                   '[upstream]\nanything = "goes"\n')
    p = run("run", "--config", str(bad))
    assert p.returncode == 2
    for needle in ("bridge.hall", "bridge.http_listen", "bridge.colour: unknown key", "cases.grace_s",
                   "cases.prompt_timeout_s", "serial.ports", "[extras]: unknown table"):
        assert needle in p.stderr, needle
    assert "[upstream] unknown key 'anything'" in p.stderr  # judged by bridge/upstream, reported with the rest
    assert "Traceback" not in p.stderr
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[bridge\n")
    p = run("check-config", str(syntax))
    assert p.returncode == 2 and "TOML syntax" in p.stderr
    p = run("run", "--config", str(tmp_path / "missing.toml"))
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_example_config_is_valid():
    cfg = config.load(ROOT_DIR / "deploy" / "bridge.example.toml")
    assert cfg.bridge["db"] == "/var/lib/pingjia/pingjia.db"
    assert dict(cfg.upstream)  # the upstream table is kept for bridge/upstream, and valid


def test_every_command_and_option_has_help():
    """Every command of `pingjia` has help text; every option of the bridge's commands too."""
    from pingjia.bridge import cli as bridge_cli

    ours = {c.name for c in (bridge_cli.run, bridge_cli.check_config, bridge_cli.status, bridge_cli.devices_cmd,
                             bridge_cli.device, bridge_cli.windows, bridge_cli.cases, bridge_cli.log_cmd)}
    missing = []

    def walk(cmd, path, mine):
        if not (cmd.help or cmd.short_help):
            missing.append(path)
        for p in cmd.params:
            if mine and isinstance(p, click.Option) and not p.help:
                missing.append("%s %s" % (path, p.opts[0]))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, "%s %s" % (path, name), mine or (cmd is cli_main and name in ours))

    walk(cli_main, "pingjia", False)
    assert missing == []
    assert run("cases", "open", "--help").returncode == 0


def test_service_notify_cli_cases_and_sigterm(tmp_path):
    db = tmp_path / "var" / "bridge.db"
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[bridge]\ndb = "%s"\nhall = "h1"\nhttp_listen = "127.0.0.1:%d"\n'
                   '[serial]\nports = ["%s/no-such-port*"]\n[mqtt]\nenabled = false\n' % (db, port, tmp_path))
    env = {"PINGJIA_CONFIG": str(cfg)}
    assert run("windows", "add", "W01", "--name", "一号窗口", env=env).returncode == 0
    add = run("device", "add", "KP-0001", "--window", "W01", env=env)
    assert add.returncode == 0 and "key" in add.stdout
    proc = subprocess.Popen([PINGJIA, "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000"})
    try:
        assert sock.recv(4096).startswith(b"READY=1")
        assert sock.recv(4096) == b"WATCHDOG=1"
        p = run("cases", "open", "BJ001", "--window", "W01", "--clerk-name", "王芳", "--task-name", "开办", env=env)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["state"] == "open"
        p = run("cases", "finish", "BJ001", env=env)
        assert p.returncode == 0 and json.loads(p.stdout)["state"] == "prompted"
        p = run("cases", "list", env=env)
        assert "BJ001" in p.stdout and "prompted" in p.stdout
        p = run("cases", "finish", "NOPE", env=env)
        assert p.returncode == 1 and "unknown case NOPE (HTTP 404)" in p.stderr
        p = run("status", "--json", env=env)
        st = json.loads(p.stdout)
        assert st["keypads"][0]["device_id"] == "KP-0001" and st["keypads"][0]["state"] == "never"
        proc.send_signal(signal.SIGTERM)
        msgs = []
        while b"STOPPING=1" not in msgs:
            msgs.append(sock.recv(4096))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    err = proc.stderr.read()
    assert "level=INFO logger=pingjia.bridge.service msg=\"bridge ready\" hall=h1" in err
    assert "bridge stopped" in err and "flushed=True" in err
    assert "Traceback" not in err


def test_device_commands_keep_binding_history(tmp_path):
    env = {"PINGJIA_DB": str(tmp_path / "b.db")}
    for args in (("windows", "add", "W01"), ("windows", "add", "W02"), ("device", "add", "KP-0001", "--window", "W01"),
                 ("device", "add", "KP-0002"), ("device", "replace", "KP-0001", "KP-0002"),
                 ("device", "bind", "KP-0002", "W02"), ("device", "rotate-key", "KP-0002")):
        p = run(*args, env=env)
        assert p.returncode == 0, (args, p.stderr)
    p = run("device", "history", env=env)
    lines = p.stdout.splitlines()[1:]
    assert [ln.split()[:2] for ln in lines] == [["KP-0001", "W01"], ["KP-0002", "W01"], ["KP-0002", "W02"]]
    p = run("devices", env=env)
    assert "KP-0001" in p.stdout and "yes" in p.stdout  # retired, still listed
    p = run("device", "bind", "KP-0001", "W01", env=env)
    assert p.returncode == 1 and "retired" in p.stderr
    p = run("log", "--audit", env=env)
    assert "device.rotate-key" in p.stdout
    assert "key" not in "".join(ln for ln in p.stdout.splitlines() if "rotate" in ln).replace("rotate-key", "")


def test_start_failure_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = tmp_path / "bridge.toml"
        cfg.write_text('[bridge]\ndb = "%s"\nhttp_listen = "127.0.0.1:%d"\n[mqtt]\nenabled = false\n'
                       % (tmp_path / "b.db", busy.getsockname()[1]))
        p = run("run", "--config", str(cfg))
    assert p.returncode == 1
    assert "error: cannot start: [Errno 98] Address already in use" in p.stderr
    assert "Traceback" not in p.stderr


def test_systemd_unit_is_valid(tmp_path):
    text = (ROOT_DIR / "deploy" / "pingjia-bridge.service").read_text()
    for need in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=pingjia", "StateDirectory=pingjia",
                 "ConfigurationDirectory=pingjia", "NoNewPrivileges=yes", "ProtectSystem=strict", "RestartPreventExitStatus=2"):
        assert need in text, need
    if not shutil.which("systemd-analyze"):
        return  # the unit's keys are checked above; systemd checks the rest where it is installed
    unit = tmp_path / "pingjia-bridge.service"
    unit.write_text(text.replace("/usr/local/bin/pingjia", PINGJIA))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


def test_example_config_documents_every_key():
    """deploy/bridge.example.toml shows every key the bridge knows, in its table."""
    import re

    text = (ROOT_DIR / "deploy" / "bridge.example.toml").read_text()
    tables = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*#?\s*\[([a-z_.]+)\]", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"\s*#?\s*([a-z_]+)\s*=", line)
        if m and current:
            tables.setdefault(current, set()).add(m.group(1))
    missing = [(t, k) for t, k, _d, _h in config.describe() if k not in tables.get(t, set())]
    assert not missing, "document these in deploy/bridge.example.toml: %s" % missing

"""The upstream commands: help on every command and option; sync run/status/preview/profiles through the CLI."""
import json

import click
import pytest
from click.testing import CliRunner

from pingjia.tools.cli import main

from .conftest import KEY, add_case, seed_ratings

COMMANDS = [("sync", "run"), ("sync", "status"), ("sync", "profiles"), ("sync", "preview"), ("quarantine", "list"),
            ("re-push",), ("followup", "list"), ("followup", "show"), ("followup", "advance"), ("followup", "rerate"),
            ("followup", "sync"), ("report",), ("receiver",)]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_and_option_has_help(path):
    cmd = main
    for name in path:
        cmd = cmd.commands[name]
    assert cmd.help and len(cmd.help) > 20
    for p in cmd.params:
        if isinstance(p, click.Option):
            assert p.help, "%s %s has no help" % (" ".join(path), p.opts)
    r = CliRunner().invoke(main, list(path) + ["--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_sync_run_status_preview(db, receiver, tmp_path):
    dbpath = db.execute("PRAGMA database_list").fetchone()[2]
    seed_ratings(db, 12)
    add_case(db, "NOREASON", "W01", stars=2, reasons="")
    rc = receiver(profile="shandong")
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'[bridge]\ndb = "{dbpath}"\nhall = "h1"\n\n[upstream]\nendpoint = "{rc.url}"\nprofile = "shandong"\n'
                   f'sign_key = "{KEY}"\narea_code = "370102"\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["sync", "preview", "NOREASON", "--config", str(cfg)])
    assert r.exit_code == 0 and "差评 (2★) without a reason" in r.output
    r = CliRunner().invoke(main, ["sync", "preview", "P00000", "--config", str(cfg), "--profile", "gbt39046"])
    body = json.loads(r.output)["record"]
    assert body["satisfaction"] == "1" and body["assessTime"] == "20251121100005" and body["areaCode"] == "370102"
    r = CliRunner().invoke(main, ["sync", "status", "--config", str(cfg), "--json"])
    assert json.loads(r.output)["pending"] == 13
    r = CliRunner().invoke(main, ["sync", "run", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "sent 12" in r.output and "quarantined 1" in r.output and "queue: 0 pending" in r.output
    r = CliRunner().invoke(main, ["sync", "status", "--config", str(cfg)])
    assert "sent 12, quarantined 1" in r.output and "quarantined     1  mapping: 差评 (2★) without a reason" in r.output
    r = CliRunner().invoke(main, ["quarantine", "list", "--config", str(cfg)])
    assert "NOREASON" in r.output and "mapping: 差评 (2★) without a reason" in r.output
    assert rc.state()["stored"] == 12


def test_sync_run_without_endpoint_is_a_clear_error(db, tmp_path):
    dbpath = db.execute("PRAGMA database_list").fetchone()[2]
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'[bridge]\ndb = "{dbpath}"\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["sync", "run", "--config", str(cfg)])
    assert r.exit_code == 2 and "endpoint is missing" in r.output
    cfg.write_text(f'[bridge]\ndb = "{dbpath}"\n[upstream]\nendpoint = "http://x/y"\nsign_alg = "hmac-sm4"\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["sync", "run", "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown signing algorithm 'hmac-sm4'" in r.output


def test_profiles_listing():
    r = CliRunner().invoke(main, ["sync", "profiles"])
    lines = r.output.splitlines()
    assert any(l.startswith("gbt39046") and "1=非常满意" in l and "pf 5" in l for l in lines)
    assert any(l.startswith("zhejiang") and "5=非常满意" in l and "pf 4" in l and "可选" in l for l in lines)
    r = CliRunner().invoke(main, ["sync", "profiles", "--show", "shandong"])
    assert "bad_requires_reason = true" in r.output


def test_receiver_runs_as_a_command(tmp_path):
    import subprocess
    import sys
    import urllib.request
    from .conftest import free_port
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", "from pingjia.tools.cli import main; main()", "receiver", "--port", str(port),
                          "--db", str(tmp_path / "r.db"), "--profile", "gbt39046", "--key", KEY, "--sign-alg", "hmac-sm3"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "profile gbt39046, hmac-sm3, listening on http://127.0.0.1:%d" % port in line
        base = "http://127.0.0.1:%d" % port
        assert urllib.request.urlopen(base + "/health").read() == b"ok"
        req = urllib.request.Request(base + "/admin/faults", data=b'{"down": true}', method="POST")
        assert json.load(urllib.request.urlopen(req))["faults"]["down"] is True
        with pytest.raises(urllib.error.HTTPError) as e:  # unsigned batch
            urllib.request.urlopen(urllib.request.Request(base + "/api/evaluations", data=b"{}", method="POST"))
        assert e.value.code == 401
    finally:
        p.terminate()
        p.wait(10)

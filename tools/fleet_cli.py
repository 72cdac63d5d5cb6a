# pingjia.tools.fleet_cli: hall-IT commands: flash, flash-all, update, fleet (and the simulators' front ends).
import json
import sys
import time

import click

from . import flash as fl
from . import fleet as fv

DB_OPT = click.option("--db", "db_path", envvar="PINGJIA_DB", default="var/pingjia.db", show_default=True,
                      type=click.Path(dir_okay=False), help="The bridge's SQLite file (env PINGJIA_DB).")


def _fail(msg, code=1):
    click.echo("error: %s" % msg, err=True)
    sys.exit(code)


def _image():
    try:
        return fl.build_image()
    except fl.FlashError as e:
        _fail(str(e))


def _config_opts(f):
    for opt in reversed([
        click.option("--transport", type=click.Choice(["serial", "mqtt"]), default="serial", show_default=True,
                     help="How the keypad reaches the bridge."),
        click.option("--hall", default="", envvar="PINGJIA_HALL", help="Hall id used in MQTT topics (env PINGJIA_HALL)."),
        click.option("--wifi-ssid", default="", envvar="PINGJIA_WIFI_SSID", help="Wi-Fi network (mqtt keypads)."),
        click.option("--wifi-password", default="", envvar="PINGJIA_WIFI_PASSWORD",
                     help="Wi-Fi password (env PINGJIA_WIFI_PASSWORD; never printed)."),
        click.option("--broker", default="", envvar="PINGJIA_BROKER", help="MQTT broker host[:port] (mqtt keypads)."),
        click.option("--hello-timeout", type=float, default=fl.HELLO_TIMEOUT, show_default=True,
                     help="Seconds to wait for the board's signed HELLO after reset."),
        click.option("--force", is_flag=True, help="Re-provision a board or device id that is already set up."),
        DB_OPT,
    ]):
        f = opt(f)
    return f


def _settings(transport, hall, wifi_ssid, wifi_password, broker):
    wifi = {"ssid": wifi_ssid, "password": wifi_password} if wifi_ssid else None
    b = None
    if broker:
        host, _, port = broker.partition(":")
        b = {"host": host, "port": int(port or 1883)}
    return dict(transport=transport, hall=hall, wifi=wifi, broker=b)


def _report(results):
    click.echo(fl.summary_table(results))
    failed = [r for r in results if not r.ok]
    click.echo("%d done, %d failed" % (len(results) - len(failed), len(failed)))
    if failed:
        sys.exit(1)


def register(group):
    @group.command("flash")
    @click.argument("port")
    @click.option("--device-id", default=None, help="Device id to give the keypad (default: next free KP-NNNN).")
    @click.option("--window", "window_id", default="", help="Window to bind the keypad to, e.g. W03.")
    @_config_opts
    def flash_cmd(port, device_id, window_id, transport, hall, wifi_ssid, wifi_password, broker, hello_timeout, force, db_path):
        """Flash and provision one keypad on PORT: compiled firmware, a fresh key and its config.

        Verifies every file by SHA-256 on the board, resets it, waits for its
        signed HELLO and registers device, key and window with the bridge.
        The key is never printed."""
        image = _image()
        try:
            device_id = device_id or fl.next_device_ids(db_path, 1)[0]
        except fl.FlashError as e:
            _fail(str(e))
        res = fl.flash_board(port, db_path, image, device_id, window_id, force=force, hello_timeout=hello_timeout,
                             progress=fl.Progress([port]).for_port(port),
                             **_settings(transport, hall, wifi_ssid, wifi_password, broker))
        _report([res])

    @group.command("flash-all")
    @click.argument("ports", nargs=-1)
    @click.option("--windows", default="", help="Comma-separated windows to bind, in port order (e.g. W01,W02).")
    @click.option("--jobs", type=int, default=8, show_default=True, help="Boards flashed at once.")
    @_config_opts
    def flash_all_cmd(ports, windows, jobs, transport, hall, wifi_ssid, wifi_password, broker, hello_timeout, force, db_path):
        """Flash every board plugged in (or the PORTS given) in parallel, with progress and a summary table."""
        ports = list(ports) or fl.discover()
        if not ports:
            _fail("no boards found (plug them in, or name the ports)")
        wins = [w.strip() for w in windows.split(",") if w.strip()]
        if wins and len(wins) != len(ports):
            _fail("--windows names %d windows for %d boards" % (len(wins), len(ports)))
        image = _image()
        try:
            ids = fl.next_device_ids(db_path, len(ports))
        except fl.FlashError as e:
            _fail(str(e))
        plan = {p: (ids[i], wins[i] if wins else "") for i, p in enumerate(ports)}
        settings = _settings(transport, hall, wifi_ssid, wifi_password, broker)
        click.echo("flashing %d board(s) with firmware %s" % (len(ports), image.version), err=True)
        results = fl.run_many(ports, lambda p, cb: fl.flash_board(
            p, db_path, image, plan[p][0], plan[p][1], force=force, hello_timeout=hello_timeout, progress=cb,
            **settings), jobs=jobs, progress=fl.Progress(ports))
        _report(results)

    @group.command("update")
    @click.argument("ports", nargs=-1)
    @click.option("--force", is_flag=True, help="Allow installing an older firmware than the board runs.")
    @click.option("--jobs", type=int, default=8, show_default=True, help="Boards updated at once.")
    @click.option("--hello-timeout", type=float, default=fl.HELLO_TIMEOUT, show_default=True,
                  help="Seconds to wait for the board's signed HELLO after reset.")
    @DB_OPT
    def update_cmd(ports, force, jobs, hello_timeout, db_path):
        """Update the firmware of provisioned keypads over USB, keeping their config, journal and seq.

        Refuses a downgrade unless --force. Without PORTS, updates every board
        plugged in. `pingjia fleet --versions` shows which keypads run which version."""
        ports = list(ports) or fl.discover()
        if not ports:
            _fail("no boards found (plug them in, or name the ports)")
        image = _image()
        results = fl.run_many(ports, lambda p, cb: fl.update_board(p, db_path, image, force=force,
                                                                    hello_timeout=hello_timeout, progress=cb),
                              jobs=jobs, progress=fl.Progress(ports))
        _report(results)

    @group.command("fleet")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--problems", is_flag=True, help="Only windows and keypads that need attention.")
    @click.option("--versions", is_flag=True, help="Which keypads run which firmware version.")
    @click.option("--check", is_flag=True, help="Exit 1 when any window has a problem (for monitoring).")
    @DB_OPT
    def fleet_cmd(as_json, problems, versions, check, db_path):
        """Every window and its keypad: online, last seen, version, journal depth, errors; problems first."""
        import sqlite3
        from pathlib import Path

        if not Path(db_path).exists():
            _fail("bridge database %s does not exist (start the bridge once, or pass --db)" % db_path)
        conn = sqlite3.connect("file:%s?mode=ro" % Path(db_path).resolve(), uri=True)
        try:
            rows = fv.fleet(conn, time.time())
        except sqlite3.DatabaseError as e:
            _fail("cannot read %s: %s" % (db_path, e))
        finally:
            conn.close()
        if problems:
            rows = [r for r in rows if r["problem"]]
        if versions:
            v = fv.versions(rows)
            click.echo(json.dumps(v, ensure_ascii=False, indent=1) if as_json
                       else fv.format_table(["版本", "数量", "评价器"], [[k, len(ids), " ".join(ids)] for k, ids in v.items()]))
        elif as_json:
            click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        else:
            click.echo(fv.table(rows))
            click.echo(fv.summary(rows))
        if check and any(r["problem"] for r in rows):
            sys.exit(1)

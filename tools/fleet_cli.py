# pingjia.tools.fleet_cli: hall-IT commands: flash, flash-all, update, fleet, simulate, vboard.
#
# Device bookkeeping (add, bind, replace, retire, rotate-key) is the bridge's
# `pingjia device ...`; these commands put firmware on boards and watch them.
import json
import signal
import sys
import threading
import time

import click

from ..bridge.cli import CONFIG_OPT, DB_OPT, load_config, open_db
from . import flash as fl
from . import fleet as fv


def _fail(msg, code=1):
    click.echo("error: %s" % msg, err=True)
    sys.exit(code)


def _db_path(db_path, config_path):
    """The bridge's SQLite file: --db, else the config's, else the embedded default."""
    return db_path or load_config(config_path).bridge["db"]


def _image():
    try:
        return fl.build_image()
    except fl.FlashError as e:
        _fail(str(e))


def _settings_opt(values):
    out = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq:
            _fail("--set wants name=value, got %r" % item)
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def _config_opts(f):
    for opt in reversed([
        click.option("--transport", type=click.Choice(["serial", "mqtt"]), default="serial", show_default=True,
                     help="How the keypad reaches the bridge."),
        click.option("--hall", default="", envvar="PINGJIA_HALL", help="Hall id in MQTT topics (env PINGJIA_HALL; default: the bridge config's)."),
        click.option("--wifi-ssid", default="", envvar="PINGJIA_WIFI_SSID", help="Wi-Fi network (mqtt keypads)."),
        click.option("--wifi-password", default="", envvar="PINGJIA_WIFI_PASSWORD",
                     help="Wi-Fi password (env PINGJIA_WIFI_PASSWORD; never printed)."),
        click.option("--broker", default="", envvar="PINGJIA_BROKER",
                     help="MQTT broker host[:port] (mqtt keypads; the password is derived from the key)."),
        click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
                     help="Firmware setting, e.g. heartbeat_s=30 or journal_cap=1000 (repeatable)."),
        click.option("--hello-timeout", type=float, default=fl.HELLO_TIMEOUT, show_default=True,
                     help="Seconds to wait for the board's signed HELLO after reset."),
        click.option("--force", is_flag=True, help="Re-provision a board or device id that is already set up."),
        DB_OPT,
        CONFIG_OPT,
    ]):
        f = opt(f)
    return f


def _keypad_config(transport, hall, wifi_ssid, wifi_password, broker, settings, config_path):
    if transport == "mqtt" and not hall:
        hall = load_config(config_path).bridge["hall"]  # the bridge's own hall id: same topics
    wifi = {"ssid": wifi_ssid, "password": wifi_password} if wifi_ssid else None
    b = None
    if broker:
        host, _, port = broker.partition(":")
        try:
            b = {"host": host, "port": int(port or 1883)}
        except ValueError:
            _fail("--broker wants host[:port], got %r" % broker)
    return dict(transport=transport, hall=hall, wifi=wifi, broker=b, settings=_settings_opt(settings))


def _precheck(device_ids, window_ids, keypad, db_path, force):
    """Fail before touching any board: a config the firmware would reject, a taken id, an unknown window."""
    try:
        for did, wid in zip(device_ids, window_ids):
            fl.make_config(did, bytes(32), wid, **keypad)
            fl.check_new_device(db_path, did, wid, force)
    except fl.FlashError as e:
        _fail(str(e))


def _report(results):
    click.echo(fl.summary_table(results))
    failed = [r for r in results if not r.ok]
    click.echo("%d done, %d failed" % (len(results) - len(failed), len(failed)))
    if failed:
        sys.exit(1)


def _ports(ports):
    ports = list(ports) or fl.discover()
    if not ports:
        _fail("no boards found (plug them in, or name the ports)")
    return ports


def register(group):
    for cmd in (flash_cmd, flash_all_cmd, update_cmd, fleet_cmd, simulate_cmd, vboard_cmd):
        group.add_command(cmd)


@click.command("flash")
@click.argument("port")
@click.option("--device-id", default=None, help="Device id to give the keypad (default: next free KP-NNNN).")
@click.option("--window", "window_id", default="", help="Window to bind the keypad to, e.g. W03.")
@_config_opts
def flash_cmd(port, device_id, window_id, transport, hall, wifi_ssid, wifi_password, broker, settings,
              hello_timeout, force, db_path, config_path):
    """Flash and provision one keypad on PORT: compiled firmware, a fresh key and its config.

    Verifies every file by SHA-256 on the board, resets it, waits for its
    signed HELLO and registers device, key and window with the bridge.
    The key is never printed. A retry after a failure resumes the copy."""
    db = _db_path(db_path, config_path)
    keypad = _keypad_config(transport, hall, wifi_ssid, wifi_password, broker, settings, config_path)
    try:
        device_id = device_id or fl.next_device_ids(db, 1)[0]
    except fl.FlashError as e:
        _fail(str(e))
    _precheck([device_id], [window_id], keypad, db, force)
    image = _image()
    res = fl.flash_board(port, db, image, device_id, window_id, force=force, hello_timeout=hello_timeout,
                         progress=fl.Progress([port]).for_port(port), **keypad)
    _report([res])


@click.command("flash-all")
@click.argument("ports", nargs=-1)
@click.option("--windows", default="", help="Comma-separated windows to bind, in port order (e.g. W01,W02).")
@click.option("--jobs", type=int, default=8, show_default=True, help="Boards flashed at once.")
@_config_opts
def flash_all_cmd(ports, windows, jobs, transport, hall, wifi_ssid, wifi_password, broker, settings,
                  hello_timeout, force, db_path, config_path):
    """Flash every board plugged in (or the PORTS given) in parallel, with progress and a summary table.

    Each board gets the next free device id and a fresh key; failed boards
    can be flashed again with the same command (copying resumes)."""
    ports = _ports(ports)
    wins = [w.strip() for w in windows.split(",") if w.strip()]
    if wins and len(wins) != len(ports):
        _fail("--windows names %d windows for %d boards" % (len(wins), len(ports)))
    wins = wins or [""] * len(ports)
    db = _db_path(db_path, config_path)
    keypad = _keypad_config(transport, hall, wifi_ssid, wifi_password, broker, settings, config_path)
    try:
        ids = fl.next_device_ids(db, len(ports))
    except fl.FlashError as e:
        _fail(str(e))
    _precheck(ids, wins, keypad, db, force)
    image = _image()
    plan = {p: (ids[i], wins[i]) for i, p in enumerate(ports)}
    click.echo("flashing %d board(s) with firmware %s" % (len(ports), image.version), err=True)
    results = fl.run_many(ports, lambda p, cb: fl.flash_board(
        p, db, image, plan[p][0], plan[p][1], force=force, hello_timeout=hello_timeout, progress=cb, **keypad),
        jobs=jobs, progress=fl.Progress(ports))
    _report(results)


@click.command("update")
@click.argument("ports", nargs=-1)
@click.option("--force", is_flag=True, help="Allow installing an older firmware than the board runs.")
@click.option("--jobs", type=int, default=8, show_default=True, help="Boards updated at once.")
@click.option("--hello-timeout", type=float, default=fl.HELLO_TIMEOUT, show_default=True,
              help="Seconds to wait for the board's signed HELLO after reset.")
@DB_OPT
@CONFIG_OPT
def update_cmd(ports, force, jobs, hello_timeout, db_path, config_path):
    """Update the firmware of provisioned keypads over USB, keeping their config, journal and seq.

    Refuses a downgrade unless --force. Without PORTS, updates every board
    plugged in. `pingjia fleet --versions` shows which keypads run which version."""
    ports = _ports(ports)
    db = _db_path(db_path, config_path)
    image = _image()
    results = fl.run_many(ports, lambda p, cb: fl.update_board(p, db, image, force=force, hello_timeout=hello_timeout,
                                                                progress=cb), jobs=jobs, progress=fl.Progress(ports))
    _report(results)


@click.command("fleet")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--problems", is_flag=True, help="Only windows and keypads that need attention.")
@click.option("--versions", is_flag=True, help="Which keypads run which firmware version.")
@click.option("--check", is_flag=True, help="Exit 1 when any window has a problem (for monitoring).")
@DB_OPT
@CONFIG_OPT
def fleet_cmd(as_json, problems, versions, check, db_path, config_path):
    """Every window and its keypad: online, last seen, version, journal depth, errors; problems first."""
    conn = open_db(db_path, config_path, create=False)
    try:
        rows = fv.fleet(conn, time.time())
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


@click.command("simulate")
@click.option("-n", "count", type=int, default=10, show_default=True, help="Number of simulated keypads.")
@click.option("--transport", type=click.Choice(["mqtt", "serial"]), default="mqtt", show_default=True,
              help="MQTT to a broker, or one pseudo-terminal per keypad.")
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="MQTT broker host[:port].")
@click.option("--hall", default="h1", show_default=True, help="Hall id in the MQTT topics.")
@click.option("--prefix", default="SIM-", show_default=True, help="Device id prefix.")
@click.option("--seed", default="pingjia-sim", show_default=True, help="Keys are derived from seed + device id.")
@click.option("--rate", type=float, default=5.0, show_default=True, help="Presses per second, whole fleet.")
@click.option("--mix", default="5:70,4:20,3:5,2:3,1:2", show_default=True, help="Star mix as stars:weight,...")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="How long to press keys.")
@click.option("--register", "do_register", is_flag=True, help="Register the keypads and keys with the bridge first.")
@DB_OPT
@CONFIG_OPT
def simulate_cmd(count, transport, broker, hall, prefix, seed, rate, mix, seconds, do_register, db_path, config_path):
    """Run N simulated keypads (the real firmware core on CPython) pressing keys at a rate and star mix."""
    from ..bridge import devices
    from ..bridge.broker import device_password
    from .simkeypads import Fleet, _mix, derive_key

    if count < 1:
        _fail("-n must be at least 1")
    try:
        weights = _mix(mix)
    except ValueError:
        _fail("--mix wants stars:weight,... e.g. 5:70,4:20,1:10")
    if not weights or any(s not in range(1, 6) for s in weights):
        _fail("--mix names stars 1..5 only")
    host, _, port = broker.partition(":")
    ids = ["%s%04d" % (prefix, i + 1) for i in range(count)]
    keys = {d: derive_key(seed, d) for d in ids}
    if do_register:
        conn = open_db(db_path, config_path, create=False)
        try:
            known = devices.keys(conn)
            for d in ids:
                if d not in known:
                    devices.add(conn, d, key=keys[d], transport=transport, actor="simulate")
                elif known[d] != keys[d]:
                    _fail("%s is registered with another key (another --seed?)" % d)
        except devices.DeviceError as e:
            _fail(str(e))
        finally:
            conn.close()
    with Fleet(count, transport, host, int(port or 1883), hall, keys=keys,
               password=lambda d: device_password(keys[d])) as f:
        if transport == "serial":
            for d, p in sorted(f.ports.items()):
                click.echo("%s %s" % (d, p))
        n = f.drive(rate, weights, seconds)
        time.sleep(1.0)
        st = f.stats()
        st["presses"] = n
        click.echo(json.dumps(st))


@click.command("vboard")
@click.option("--flash", "flash_dir", required=True, type=click.Path(file_okay=False),
              help="Host folder that holds the board's flash (kept between runs).")
def vboard_cmd(flash_dir):
    """Run one virtual keypad board (real MicroPython) on a pseudo-terminal until Ctrl-C.

    Prints its port for `pingjia flash` and the bridge. Type 1-5 and Enter to
    press that star key, `cut` for a power cut, `state` for LEDs and mode."""
    from .vboard import VirtualBoard, VirtualBoardError

    vb = VirtualBoard(flash_dir)
    try:
        vb.start()
    except VirtualBoardError as e:
        _fail(str(e))
    click.echo("port: %s" % vb.port)
    click.echo("type 1-5 + Enter to press a star key, 'cut' for a power cut, 'state', Ctrl-C to stop")
    def keys():
        for line in sys.stdin:
            cmd = line.strip()
            try:
                if cmd in ("1", "2", "3", "4", "5"):
                    vb.tap(int(cmd), 150)
                    click.echo("pressed %s" % ("★" * int(cmd)))
                elif cmd == "cut":
                    vb.power_cut()
                    vb.start()
                    click.echo("power cut; board on again at %s" % vb.port)
                elif cmd == "state":
                    click.echo(json.dumps(vb.state()))
                elif cmd:
                    click.echo("unknown: %r (1-5, cut, state)" % cmd)
            except VirtualBoardError as e:
                click.echo("error: %s" % e, err=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=keys, daemon=True).start()  # stdin closed: the board just keeps running
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()

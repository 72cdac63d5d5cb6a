# pingjia.bridge.cli: the bridge's commands (run, status, devices, device ..., windows, cases ..., log, backup).
#
# Device and window commands work on the SQLite file directly (a running
# bridge picks up keys within seconds). Case commands always go through the
# running bridge's HTTP API, because finishing a case must prompt a keypad and
# only the bridge process holds the links.
import json
import sys
import time
import urllib.error
import urllib.request

import click

from . import config as config_mod
from . import devices as dev
from . import status as status_mod
from .store import Store, StoreError

CONFIG_OPT = click.option("--config", "config_path", envvar="PINGJIA_CONFIG", type=click.Path(dir_okay=False),
                          help="The bridge's TOML config (env PINGJIA_CONFIG); embedded defaults when not given.")
DB_OPT = click.option("--db", "db_path", envvar="PINGJIA_DB", type=click.Path(dir_okay=False),
                      help="The bridge's SQLite file (env PINGJIA_DB); default: from --config, else var/pingjia.db.")
JSON_OPT = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _fail(msg, code=1):
    click.echo("error: %s" % msg, err=True)
    sys.exit(code)


def load_config(path):
    """The bridge config at `path` (or the embedded defaults), validated; exit 2 with every error.
    Shared by the other command modules (tools/fleet_cli.py) so all read the config one way."""
    try:
        return config_mod.load(path) if path else config_mod.defaults()
    except config_mod.ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


def open_db(db_path, config_path=None, create=True):
    """A connection to the bridge's database (--db, else the config's), migrated; exit 1 with the reason."""
    path = db_path or load_config(config_path).bridge["db"]
    store = Store(path)
    if not create and not store.exists():
        _fail("database %s does not exist (run the bridge once, or pass --db)" % path)
    try:
        store.migrate()
    except StoreError as e:
        _fail(str(e))
    return store.connect()


def _ago(t, now):
    if not t:
        return "-"
    s = int(now - t)
    return "%ds" % s if s < 120 else "%dm" % (s // 60) if s < 7200 else "%dh" % (s // 3600)


def _table(rows, cols):
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for x in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(x, widths)))


def register(group):
    for cmd in (run, check_config, status, devices_cmd, device, windows, cases, log_cmd, backup):
        group.add_command(cmd)


@click.command()
@CONFIG_OPT
def run(config_path):
    """Run the hall bridge (serial + MQTT ingest, case API, status page) until SIGTERM."""
    from . import logfmt, service

    cfg = load_config(config_path)
    logfmt.setup(cfg.bridge["log_level"])
    try:
        code = service.run(cfg)
    except Exception as e:  # logged by the service; one clear line for the operator
        _fail("cannot start: %s" % e)
    sys.exit(code)


@click.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config(path):
    """Validate a bridge config file: prints every problem and exits 2 when it is wrong."""
    cfg = load_config(path)
    click.echo("ok: %s (db %s, hall %s, http %s)" % (path, cfg.bridge["db"], cfg.bridge["hall"], cfg.bridge["http_listen"]))


@click.command()
@DB_OPT
@CONFIG_OPT
@JSON_OPT
def status(db_path, config_path, as_json):
    """The hall at a glance: keypads online and with problems, today's cases, the upstream queue.

    Per keypad (window, state, version, journal): `pingjia fleet`."""
    from .upstream import status as upstream_status

    conn = open_db(db_path, config_path, create=False)
    now = time.time()
    st = status_mod.status(conn, now)
    st["upstream"] = upstream_status(conn, now)
    st["cases_today"] = status_mod.cases_last_day(conn, now)
    if as_json:
        click.echo(json.dumps(st, ensure_ascii=False, indent=1))
        return
    s, up = st["summary"], st["upstream"]
    click.echo("keypads   %d windows, %d keypads, %d online, %d with problems" % (s["windows"], s["keypads"], s["online"], s["problems"]))
    for r in st["keypads"]:
        if r["problem"]:
            click.echo("  %-8s %-10s %s" % (r["window_id"] or "-", r["device_id"] or "-", r["detail"] or r["state"]))
    click.echo("cases     last 24 h: %s" % (", ".join("%s %d" % kv for kv in sorted(st["cases_today"].items())) or "none"))
    click.echo("upstream  %d pending (%d due), %d sent, %d quarantined, lag %.0f s"
               % (up["pending"], up["due"], up["sent"], up["quarantined"], up["sync_lag_s"] or 0))
    click.echo("per keypad: pingjia fleet    quarantined records: pingjia quarantine")


@click.command("devices")
@DB_OPT
@CONFIG_OPT
@JSON_OPT
def devices_cmd(db_path, config_path, as_json):
    """List registered keypads (retired ones last) with their window and last state."""
    conn = open_db(db_path, config_path, create=False)
    rows = status_mod.devices(conn)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    now = time.time()
    for r in rows:
        r["seen"] = _ago(r["last_seen"], now)
        r["retired"] = "yes" if r["retired_at"] else ""
    _table(rows, ["device_id", "window_id", "transport", "online", "seen", "fw_version", "rejects", "last_reject", "retired"])


@click.group()
def device():
    """Register keypads and manage their keys and window bindings."""


def _devcall(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except dev.DeviceError as e:
        _fail(str(e))


@device.command("add")
@click.argument("device_id")
@click.option("--window", "window_id", help="Bind it to this window.")
@click.option("--transport", type=click.Choice(dev.TRANSPORTS), default="serial", show_default=True, help="How it connects.")
@click.option("--key-hex", help="Use this 64-hex-digit key (else a new random key is generated and printed once).")
@DB_OPT
@CONFIG_OPT
def device_add(device_id, window_id, transport, key_hex, db_path, config_path):
    """Register a keypad and its key (`pingjia flash` does this for you when flashing)."""
    try:
        key = bytes.fromhex(key_hex) if key_hex else None
    except ValueError:
        _fail("--key-hex must be 64 hex digits")
    key = _devcall(dev.add, open_db(db_path, config_path), device_id, key, window_id, transport)
    click.echo("added %s%s" % (device_id, " at window %s" % window_id if window_id else ""))
    if not key_hex:
        click.echo("key (put it in the keypad's config; shown only now): %s" % key.hex())


@device.command("bind")
@click.argument("device_id")
@click.argument("window_id")
@DB_OPT
@CONFIG_OPT
def device_bind(device_id, window_id, db_path, config_path):
    """Bind a keypad to a window (the window's previous keypad is unbound; history is kept)."""
    _devcall(dev.bind, open_db(db_path, config_path), device_id, window_id)
    click.echo("%s now serves window %s" % (device_id, window_id))


@device.command("unbind")
@click.argument("device_id")
@DB_OPT
@CONFIG_OPT
def device_unbind(device_id, db_path, config_path):
    """Release a keypad from its window (it stays registered as a spare)."""
    _devcall(dev.unbind, open_db(db_path, config_path), device_id)
    click.echo("%s unbound" % device_id)


@device.command("replace")
@click.argument("old_id")
@click.argument("new_id")
@click.option("--keep-old", is_flag=True, help="Leave the old unit registered as a spare instead of retiring it.")
@DB_OPT
@CONFIG_OPT
def device_replace(old_id, new_id, keep_old, db_path, config_path):
    """A replacement unit NEW_ID takes over OLD_ID's window; OLD_ID is retired."""
    _devcall(dev.replace, open_db(db_path, config_path), old_id, new_id, retire_old=not keep_old)
    click.echo("%s replaces %s" % (new_id, old_id))


@device.command("retire")
@click.argument("device_id")
@DB_OPT
@CONFIG_OPT
def device_retire(device_id, db_path, config_path):
    """Take a keypad out of service: unbound, its key no longer accepted."""
    _devcall(dev.retire, open_db(db_path, config_path), device_id)
    click.echo("%s retired" % device_id)


@device.command("rotate-key")
@click.argument("device_id")
@DB_OPT
@CONFIG_OPT
def device_rotate_key(device_id, db_path, config_path):
    """Give a keypad a new key; prints it once (re-provision the unit with it)."""
    key = _devcall(dev.rotate_key, open_db(db_path, config_path), device_id)
    click.echo("new key for %s (shown only now): %s" % (device_id, key.hex()))


@device.command("identify")
@click.argument("device_id")
@click.option("--seconds", default=10, show_default=True, help="How long the keypad blinks.")
@click.option("--url", envvar="PINGJIA_URL", help="Bridge API base URL (env PINGJIA_URL); default from --config.")
@click.option("--token", envvar="PINGJIA_TOKEN", help="Bearer token (env PINGJIA_TOKEN); default from --config.")
@CONFIG_OPT
def device_identify(device_id, seconds, url, token, config_path):
    """Make a keypad blink (through the running bridge) so hall IT can find it."""
    r = _api(_api_target(url, token, config_path), "POST", "/api/devices/%s/identify" % urllib.request.quote(device_id, safe=""),
             {"seconds": seconds})
    click.echo("%s: identify %s" % (device_id, "sent" if r["sent"] else "not sent (keypad has no link yet)"))


@device.command("history")
@click.argument("device_id", required=False)
@click.option("--window", "window_id", help="Only this window.")
@DB_OPT
@CONFIG_OPT
def device_history(device_id, window_id, db_path, config_path):
    """Which unit served which window, when (binding history)."""
    rows = dev.history(open_db(db_path, config_path, create=False), device_id, window_id)
    _table([dict(r) for r in rows], ["device_id", "window_id", "bound_at", "unbound_at", "note"])


@click.group(invoke_without_command=True)
@DB_OPT
@CONFIG_OPT
@click.pass_context
def windows(ctx, db_path, config_path):
    """List the hall's windows with their keypads (subcommand `add` adds one)."""
    ctx.obj = (db_path, config_path)
    if ctx.invoked_subcommand is None:
        _table(status_mod.windows(open_db(db_path, config_path, create=False)),
               ["window_id", "name", "dept_name", "device_id", "bindings"])


@windows.command("add")
@click.argument("window_id")
@click.option("--name", default="", help="窗口名称, shown on the status page and the keypad.")
@click.option("--dept-code", default="", help="Department code (default for its cases).")
@click.option("--dept-name", default="", help="Department name.")
@DB_OPT
@CONFIG_OPT
@click.pass_obj
def windows_add(obj, window_id, name, dept_code, dept_name, db_path, config_path):
    """Add (or rename) a window."""
    # --db/--config work here as on every other command (or on `windows` itself)
    _devcall(dev.add_window, open_db(db_path or obj[0], config_path or obj[1]), window_id, name, dept_code, dept_name)
    click.echo("window %s saved" % window_id)


# -- cases: through the running bridge's HTTP API -------------------------------------------------
@click.group()
@click.option("--url", envvar="PINGJIA_URL", help="Bridge API base URL (env PINGJIA_URL); default from --config's http_listen.")
@click.option("--token", envvar="PINGJIA_TOKEN", help="Bearer token (env PINGJIA_TOKEN); default from --config.")
@CONFIG_OPT
@click.pass_context
def cases(ctx, url, token, config_path):
    """Open, finish, cancel and read cases through the running bridge's HTTP API."""
    ctx.obj = _api_target(url, token, config_path)


def _api_target(url, token, config_path):
    cfg = load_config(config_path)
    if not url:
        host, port = cfg.http_address()
        url = "http://%s:%d" % ("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)
    return url.rstrip("/"), token if token is not None else cfg.bridge["http_token"]


def _api(obj, method, path, body=None):
    url, token = obj
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            msg = e.reason
        _fail("%s (HTTP %d)" % (msg, e.code))
    except (urllib.error.URLError, OSError) as e:
        _fail("bridge API %s not reachable: %s (is `pingjia run` up?)" % (url, getattr(e, "reason", e)))


def _show(c):
    click.echo(json.dumps(c, ensure_ascii=False, indent=1))


@cases.command("open")
@click.argument("project_no")
@click.option("--window", "window_id", required=True, help="Window the case is handled at.")
@click.option("--task-code", help="事项编码.")
@click.option("--task-name", help="事项名称.")
@click.option("--dept-code", help="Department code (default: the window's).")
@click.option("--dept-name", help="Department name (default: the window's).")
@click.option("--clerk-id", help="经办人 id.")
@click.option("--clerk-name", help="经办人 name (shown on the keypad).")
@click.option("--user-prop", type=click.Choice(["1", "2"]), help="1 person, 2 company.")
@click.option("--contact-ref", help="Reference for the SMS gateway (never a phone number in clear).")
@click.pass_obj
def cases_open(obj, project_no, **fields):
    """Open case PROJECT_NO (办件编号) at a window."""
    body = {k: (int(v) if k == "user_prop" else v) for k, v in fields.items() if v is not None}
    body["project_no"] = project_no
    _show(_api(obj, "POST", "/api/cases", body))


@cases.command("finish")
@click.argument("project_no")
@click.pass_obj
def cases_finish(obj, project_no):
    """Finish a case: the window's keypad asks for a rating."""
    _show(_api(obj, "POST", "/api/cases/%s/finish" % urllib.request.quote(project_no, safe=""), {}))


@cases.command("cancel")
@click.argument("project_no")
@click.pass_obj
def cases_cancel(obj, project_no):
    """Cancel a case (a pending prompt is withdrawn from the keypad)."""
    _show(_api(obj, "POST", "/api/cases/%s/cancel" % urllib.request.quote(project_no, safe=""), {}))


@cases.command("show")
@click.argument("project_no")
@click.pass_obj
def cases_show(obj, project_no):
    """A case with its rating, reasons and every press."""
    _show(_api(obj, "GET", "/api/cases/%s" % urllib.request.quote(project_no, safe="")))


@cases.command("list")
@click.option("--state", type=click.Choice(["open", "prompted", "rated", "unrated", "cancelled"]), help="Only this state.")
@click.option("--window", "window_id", help="Only this window.")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@click.pass_obj
def cases_list(obj, state, window_id, limit):
    """Recent cases with their state and stars."""
    q = "&".join("%s=%s" % (k, urllib.request.quote(str(v))) for k, v in
                 (("state", state), ("window_id", window_id), ("limit", limit)) if v)
    _table(_api(obj, "GET", "/api/cases?" + q)["cases"],
           ["project_no", "window_id", "state", "stars", "reasons", "clerk_name", "task_name"])


@click.command("log")
@click.option("--device", "device_id", help="Only this keypad.")
@click.option("--audit", is_flag=True, help="Show the audit table (case actions, rejects, key changes) instead.")
@click.option("--limit", default=50, show_default=True, help="Newest N lines.")
@DB_OPT
@CONFIG_OPT
def log_cmd(device_id, audit, limit, db_path, config_path):
    """Device log lines (text keypads printed, LOG messages) or the audit trail."""
    conn = open_db(db_path, config_path, create=False)
    if audit:
        sql = "SELECT at, actor, action, subject, detail FROM audit %s ORDER BY id DESC LIMIT ?"
        where, cols = ("WHERE actor = ? OR subject = ?", (device_id, device_id)) if device_id else ("", ())
    else:
        sql = "SELECT at, device_id, port, line FROM device_log %s ORDER BY id DESC LIMIT ?"
        where, cols = ("WHERE device_id = ?", (device_id,)) if device_id else ("", ())
    rows = [dict(r) for r in conn.execute(sql % where, cols + (limit,))][::-1]
    for r in rows:
        r["at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
    _table(rows, list(rows[0]) if rows else ["at"])


@click.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False))
@DB_OPT
@CONFIG_OPT
def backup(dest, db_path, config_path):
    """Copy the bridge's database to DEST, also while it runs: one committed state, checked, one file.

    DEST must not exist. Nothing is migrated first, so a backup taken before an upgrade holds the
    old schema. To restore: stop the bridge, put the copy in place of the database file, delete
    the file's -wal and -shm beside it, start the bridge."""
    store = Store(db_path or load_config(config_path).bridge["db"])
    try:
        r = store.backup(dest)
    except StoreError as e:
        _fail(str(e))
    click.echo("backup %s -> %s: %.1f MB, schema %s, %.1f s" % (store.path, dest, r["bytes"] / 1e6,
                                                               r["migrations"][-1] if r["migrations"] else "-", r["seconds"]))

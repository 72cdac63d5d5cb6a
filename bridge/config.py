# pingjia.bridge.config: the bridge's one TOML file, validated up front.
#
# `load(path)` -> Config, or ConfigError listing every problem (key by key);
# the CLI prints it and exits 2. `defaults()` is the embedded configuration the
# demo runs with (SQLite under ./var, a local Mosquitto the bridge starts).
# The schema is one table below: adding a key is one line. Unknown keys are
# errors everywhere except [upstream], which is passed through as a dict for
# bridge/upstream to validate.
import dataclasses
import ipaddress
import tomllib
from pathlib import Path
from types import MappingProxyType

from .cases import Rules


class ConfigError(ValueError):
    def __init__(self, path, problems):
        self.path = str(path)
        self.problems = list(problems)
        super().__init__("invalid config %s:\n%s" % (self.path, "\n".join("  - " + p for p in self.problems)))


def _listen(v):
    host, sep, port = str(v).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "must be host:port, e.g. 127.0.0.1:8080"
    if host not in ("", "localhost"):
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return "host must be an IP address or localhost"
    return None


def _positive(v):
    return None if v > 0 else "must be > 0"


def _nonneg(v):
    return None if v >= 0 else "must be >= 0"


def _port(v):
    return None if 0 <= v < 65536 else "must be 0..65535 (0: a free port, embedded broker only)"


def _hall(v):
    ok = v and len(v) <= 32 and all(c.isalnum() and c.isascii() or c in "-_" for c in v)
    return None if ok else "must be 1..32 characters of A-Z a-z 0-9 - _"


def _ports(v):
    bad = [p for p in v if not isinstance(p, str) or not p]
    return "must be a list of non-empty strings (paths, /dev/serial/by-id globs or VID:PID)" if bad else None


def _choice(*options):
    return lambda v: None if v in options else "must be one of %s" % ", ".join(map(repr, options))


def _loglevel(v):
    return _choice("DEBUG", "INFO", "WARNING", "ERROR")(v.upper())


# table -> key -> (type(s), default, check or None, help)
SCHEMA = {
    "bridge": {
        "db": (str, "var/pingjia.db", None, "SQLite file, created with its migrations at start (relative: to the working directory)"),
        "hall": (str, "hall1", _hall, "hall id, used in MQTT topics and upstream records"),
        "http_listen": (str, "127.0.0.1:8080", _listen, "case API, status JSON and status page"),
        "http_token": (str, "", None, "bearer token for /api/cases and /api/devices ('' = none)"),
        "log_level": (str, "INFO", _loglevel, "DEBUG, INFO, WARNING or ERROR"),
        "watchdog": (bool, True, None, "ping the systemd watchdog while the writer thread is healthy"),
        "device_log_days": (int, 90, _positive, "keep text the keypads printed this many days (audit is kept)"),
    },
    "serial": {
        "enabled": (bool, True, None, "read keypads on USB/UART serial ports"),
        "ports": (list, ["/dev/serial/by-id/*"], _ports, "paths, globs or VID:PID (e.g. 2e8a:0005)"),
        "baud": (int, 115200, _positive, "baud rate (USB CDC ignores it)"),
        "rescan_s": ((int, float), 2.0, _positive, "how often to look for new or returning ports"),
    },
    "mqtt": {
        "enabled": (bool, True, None, "take keypads over MQTT"),
        "embedded": (bool, True, None, "start a local Mosquitto when true (host/port then name it)"),
        "host": (str, "127.0.0.1", None, "broker host"),
        "port": (int, 1883, _port, "broker port"),
        "username": (str, "", None, "the bridge's broker user"),
        "password": (str, "", None, "the bridge's broker password (or password_file)"),
        "password_file": (str, "", None, "file holding the password"),
        "tls_ca": (str, "", None, "CA file: enables TLS"),
        "keepalive": (int, 20, _positive, "MQTT keepalive seconds"),
    },
    "cases": {
        "prompt_timeout_s": (int, 60, lambda v: None if 5 <= v <= 3600 else "must be 5..3600", "how long a keypad asks"),
        "grace_s": ((int, float), 3.0, _nonneg, "a different key within this replaces a mis-press"),
        "reason_required": (bool, False, None, "the keypad insists on a reason after 1-2 stars"),
        "reason_window_s": ((int, float), 8.0, _nonneg, "reason keys are offered this long after 1-2 stars (x2 when required)"),
        "expire_slack_s": ((int, float), 5.0, _nonneg, "wait after the prompt ends before marking unrated"),
    },
}
PASS_THROUGH = ("upstream",)


@dataclasses.dataclass(frozen=True)
class Config:
    path: str
    bridge: MappingProxyType
    serial: MappingProxyType
    mqtt: MappingProxyType
    cases: MappingProxyType
    upstream: MappingProxyType

    def rules(self):
        c = self.cases
        return Rules(prompt_timeout_s=c["prompt_timeout_s"], grace_s=float(c["grace_s"]),
                     reason_required=c["reason_required"], reason_window_s=float(c["reason_window_s"]),
                     expire_slack_s=float(c["expire_slack_s"]))

    def http_address(self):
        host, _, port = self.bridge["http_listen"].rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


def _typename(t):
    ts = t if isinstance(t, tuple) else (t,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names[x] for x in ts)


def validate(data, path="<config>"):
    problems, out = [], {}
    if not isinstance(data, dict):
        raise ConfigError(path, ["top level must be a table"])
    for table in sorted(set(data) - set(SCHEMA) - set(PASS_THROUGH)):
        problems.append("[%s]: unknown table (known: %s)" % (table, ", ".join(list(SCHEMA) + list(PASS_THROUGH))))
    for table, keys in SCHEMA.items():
        given = data.get(table, {})
        if not isinstance(given, dict):
            problems.append("[%s]: must be a table" % table)
            given = {}
        vals = {}
        for k in sorted(set(given) - set(keys)):
            problems.append("%s.%s: unknown key (known: %s)" % (table, k, ", ".join(keys)))
        for k, (typ, default, check, _help) in keys.items():
            v = given.get(k, default)
            types = typ if isinstance(typ, tuple) else (typ,)
            if isinstance(v, bool) and bool not in types or not isinstance(v, types):
                problems.append("%s.%s: must be %s, got %r" % (table, k, _typename(typ), v))
                continue
            why = check(v) if check else None
            if why:
                problems.append("%s.%s: %s, got %r" % (table, k, why, v))
                continue
            vals[k] = list(v) if isinstance(v, list) else v
        out[table] = vals
    up = data.get("upstream", {})
    if not isinstance(up, dict):
        problems.append("[upstream]: must be a table")
        up = {}
    else:
        from .upstream import validate as validate_upstream  # [upstream] belongs to bridge/upstream

        problems += validate_upstream(up)
    if not problems:
        m = out["mqtt"]
        if m["password_file"] and m["password"]:
            problems.append("mqtt.password_file: give password or password_file, not both")
        if m["port"] == 0 and not m["embedded"]:
            problems.append("mqtt.port: 0 (a free port) only works with embedded = true")
        if not out["serial"]["enabled"] and not m["enabled"]:
            problems.append("serial.enabled, mqtt.enabled: at least one transport must be enabled")
    if problems:
        raise ConfigError(path, problems)
    return Config(str(path), *(MappingProxyType(out[t]) for t in SCHEMA), MappingProxyType(dict(up)))


def load(path):
    """Read and validate one TOML file. Raises ConfigError (never a bare traceback)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError(path, ["cannot read: %s" % (e.strerror or e)]) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, ["not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, ["TOML syntax: %s" % e]) from None
    return validate(data, path)


def defaults():
    return validate({}, "<embedded defaults>")


def describe():
    """Every key with its default and help (deploy/bridge.example.toml is checked against it)."""
    for table, keys in SCHEMA.items():
        for k, (_t, default, _c, helptext) in keys.items():
            yield table, k, default, helptext

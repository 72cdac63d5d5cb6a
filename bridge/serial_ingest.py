# pingjia.bridge.serial_ingest: the serial transport (pyserial), one reader per port.
#
# Ports are configured as specs, each one of
#   a glob          "/dev/serial/by-id/usb-MicroPython_*"   (every match is a keypad)
#   a path          "/dev/ttyACM0"                          (retried while absent)
#   a USB id        "2e8a:0005" or "usb:2e8a:0005"          (vendor:product, hex)
# A scanner thread resolves the specs every `scan_s` and starts a reader for
# each new port. A reader opens its port without resetting the board (DTR and
# RTS held low from before the open, HUPCL cleared so closing doesn't drop
# DTR either), feeds bytes to a framing.Decoder, hands frames to
# hub.submit(raw, link) and bytes outside frames (boot banners, MicroPython
# tracebacks) to hub.device_text(link, device_id_or_None, line). When the port
# goes away (unplug: EIO / SerialException) it closes, reports the keypad
# offline and reopens with capped exponential backoff; a reader of a port that
# came from a glob or USB id ends when its path is gone for good and the
# scanner starts a new one when it reappears.
#
# The device id of a port is learnt from the hub: the hub sends on a link only
# after it has verified a message from that device there, so the first
# send(device_id, ...) names the keypad on this port.
import glob
import logging
import os
import re
import threading
import time

import serial
import serial.tools.list_ports

from ..protocol import framing

log = logging.getLogger("pingjia.bridge.serial")

_USB_ID = re.compile(r"^(?:usb:)?([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")


def resolve(specs):
    """Port specs -> {path: spec}. Explicit paths are returned even when absent."""
    out = {}
    ports = None
    for spec in specs:
        m = _USB_ID.match(spec)
        if m:
            if ports is None:
                ports = list(serial.tools.list_ports.comports())
            vid, pid = int(m.group(1), 16), int(m.group(2), 16)
            for p in ports:
                if p.vid == vid and p.pid == pid:
                    out.setdefault(_stable_name(p.device), spec)
        elif any(ch in spec for ch in "*?["):
            for path in sorted(glob.glob(spec)):
                out.setdefault(path, spec)
        else:
            out.setdefault(spec, spec)
    return out


def _stable_name(dev):
    """/dev/ttyACM0 -> its /dev/serial/by-id/... name when there is one."""
    byid = "/dev/serial/by-id"
    try:
        real = os.path.realpath(dev)
        for n in sorted(os.listdir(byid)):
            p = os.path.join(byid, n)
            if os.path.realpath(p) == real:
                return p
    except OSError:
        pass
    return dev


def _printable(line):
    try:
        t = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\x1b" for ch in t)


def is_explicit(spec):
    return not _USB_ID.match(spec) and not any(ch in spec for ch in "*?[")


class _Serial(serial.Serial):
    """pyserial's Serial without the input flush in open(): bytes the keypad
    sent just before the port opened (its HELLO, a boot traceback) are kept;
    a stale half frame among them is resynchronised by the decoder."""

    _opening = False

    def open(self):
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def _reset_input_buffer(self):
        if not self._opening:
            super()._reset_input_buffer()


def open_port(path, baudrate=115200, read_timeout=0.05, write_timeout=1.0, dtr=False, rts=False):
    """Open a serial port without resetting the board behind it."""
    s = _Serial() if hasattr(serial.Serial, "_reset_input_buffer") else serial.Serial()
    s.port = path
    s.baudrate = baudrate
    s.timeout = read_timeout
    s.write_timeout = write_timeout
    s.exclusive = True  # one bridge per keypad
    # set before open(): pyserial applies these right after opening, so the
    # lines never pulse (an ESP32 auto-reset circuit resets on DTR/RTS edges)
    s.dtr = dtr
    s.rts = rts
    s.open()
    try:  # keep DTR as it is when we close (no reset on close either)
        import termios

        attrs = termios.tcgetattr(s.fd)
        if attrs[2] & termios.HUPCL:
            attrs[2] &= ~termios.HUPCL
            termios.tcsetattr(s.fd, termios.TCSANOW, attrs)
    except Exception:  # noqa: BLE001 - not a tty that supports it (or not POSIX)
        pass
    return s


class SerialLink:
    """One port: its reader thread, its decoder, and the Link the hub sends on."""

    def __init__(self, ingest, path, spec):
        self.ingest = ingest
        self.hub = ingest.hub
        self.path = path
        self.spec = spec
        self.name = "serial:" + path
        self.device_id = None
        self._announce = None  # device id learnt in send(), announced online by the reader
        self._gone = None  # a keypad swapped out on this port, announced offline by the reader
        self._known = False  # the hub has spoken to the keypad since this open
        self._wlock = threading.Lock()
        self._ser = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="serial " + path)
        self.stats = {"frames": 0, "text": 0, "errors": 0, "opens": 0, "closes": 0, "sent": 0, "send_dropped": 0}
        self.last_error = None

    # Link --------------------------------------------------------------------
    def send(self, device_id, raw):
        """Write one framed message. Thread-safe; drops (counted) when the port is closed."""
        frame = framing.encode(raw)
        with self._wlock:
            s = self._ser
            if s is None:
                self.stats["send_dropped"] += 1
                return False
            if device_id != self.device_id or not self._known:
                if self.device_id is not None and device_id != self.device_id:
                    log.info("%s: keypad %s replaced %s on this port", self.path, device_id, self.device_id)
                    self._gone = self.device_id
                self.device_id = device_id
                self._announce = device_id
                self._known = True
            try:
                s.write(frame)
            except (serial.SerialException, OSError) as e:
                self.stats["send_dropped"] += 1
                log.info("%s: write failed (%s); the keypad will retransmit", self.path, e)
                return False
        self.stats["sent"] += 1
        return True

    # reader ------------------------------------------------------------------
    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()

    def join(self, timeout=None):
        self.thread.join(timeout)

    def _run(self):
        ing = self.ingest
        delay = ing.backoff_min
        first = True
        while not self._stop.is_set():
            if not os.path.exists(self.path) and not is_explicit(self.spec):
                break  # gone; the scanner picks it up again if it comes back
            try:
                ser = open_port(self.path, ing.baudrate, ing.read_timeout, ing.write_timeout, ing.dtr, ing.rts)
            except (serial.SerialException, OSError) as e:
                if first or self.last_error != str(e):
                    log.info("%s: cannot open (%s); retrying with backoff", self.path, e)
                self.last_error = str(e)
                first = False
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, ing.backoff_max)
                continue
            first = False
            self.stats["opens"] += 1
            log.info("%s: opened at %d baud", self.path, ing.baudrate)
            with self._wlock:
                self._ser = ser
                self._known = False
            delay = ing.backoff_min
            clean = self._read_loop(ser)
            with self._wlock:
                self._ser = None
            try:
                ser.close()
            except Exception:  # noqa: BLE001
                pass
            self.stats["closes"] += 1
            self._flush_announce()
            if self.device_id is not None:
                self._call(self.hub.link_state, self.device_id, False, self)
            if clean:
                break
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, ing.backoff_max)
        ing._reader_ended(self)

    def _read_loop(self, ser):
        """Read until stop (returns True) or the port fails (returns False)."""
        dec = framing.Decoder()
        quiet_since = time.monotonic()
        pending = False
        idle_s = self.ingest.idle_s
        try:
            while not self._stop.is_set():
                if self._announce is not None:
                    self._flush_announce()
                data = ser.read(ser.in_waiting or 1)
                if data:
                    self._items(dec.feed(data))
                    quiet_since = time.monotonic()
                    pending = True
                elif pending and time.monotonic() - quiet_since >= idle_s:
                    self._items(dec.idle())
                    pending = False
            self._items(dec.flush())
            return True
        except (serial.SerialException, OSError) as e:
            # the port is gone: a partial frame is a cut frame (reported), and the
            # bytes after its magic are its own body, not text the board printed
            self._items([it for it in dec.flush() if it[0] != framing.TEXT or _printable(it[1])])
            self.last_error = str(e)
            log.warning("%s: port lost (%s)%s; reopening with backoff", self.path, e,
                        "" if self.device_id is None else " - keypad %s offline" % self.device_id)
            return False

    def _flush_announce(self):
        """Tell the hub what send() learnt: the keypad on this port (and the one it replaced)."""
        with self._wlock:
            gone, self._gone = self._gone, None
            dev, self._announce = self._announce, None
        if gone is not None:
            self._call(self.hub.link_state, gone, False, self)
        if dev is not None:
            self._call(self.hub.link_state, dev, True, self)

    def _items(self, items):
        hub = self.hub
        for kind, value in items:
            if kind == framing.FRAME:
                self.stats["frames"] += 1
                self._call(hub.submit, value, self)
            elif kind == framing.TEXT:
                self.stats["text"] += 1
                self._call(hub.device_text, self, self.device_id, value.decode("utf-8", "replace"))
            else:
                self.stats["errors"] += 1
                self.last_error = str(value)
                reject = getattr(hub, "reject", None)  # counted and logged once per reason by the hub
                if reject is not None:
                    self._call(reject, self.device_id, value.code, value.detail, self)
                else:
                    log.debug("%s: %s", self.path, value)

    def _call(self, fn, *args):
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the reader must keep reading
            log.exception("%s: hub call %s failed", self.path, getattr(fn, "__name__", fn))


class SerialIngest:
    """All serial keypads: a scanner plus one SerialLink (reader thread) per port.

    hub     has submit(raw, link), device_text(link, device_id, line), link_state(device_id, online, link)
            (and optionally reject(device_id, code, detail, link) for framing errors)
    ports   list of specs (globs, paths, VID:PID)
    dtr/rts line levels held from before the open (False: an ESP32 auto-reset circuit never
            fires; a board whose USB stack wants DTR to send, e.g. rp2 CDC, may need dtr=True)
    write_timeout  a keypad that stops reading costs the hub's writer thread at most this long
            per write; the ACK is dropped (counted) and the keypad retransmits
    idle_s  a partial frame quiet this long is a cut frame (the decoder resyncs)
    """

    def __init__(self, hub, ports, baudrate=115200, scan_s=2.0, backoff_min=0.2, backoff_max=10.0,
                 read_timeout=0.05, write_timeout=0.25, idle_s=0.25, dtr=False, rts=False):
        self.hub = hub
        self.specs = list(ports)
        self.baudrate = baudrate
        self.scan_s = scan_s
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.idle_s = idle_s
        self.dtr = dtr
        self.rts = rts
        self.links = {}  # path -> SerialLink
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scanner = None

    def start(self):
        self._stop.clear()
        self.scan()
        self._scanner = threading.Thread(target=self._scan_loop, daemon=True, name="serial scanner")
        self._scanner.start()
        return self

    def scan(self):
        """Start a reader for every configured port not yet read. Returns the new paths."""
        new = []
        try:
            found = resolve(self.specs)
        except Exception:  # noqa: BLE001
            log.exception("serial port scan failed")
            return new
        with self._lock:
            if self._stop.is_set():
                return new
            for path, spec in found.items():
                if path in self.links:
                    continue
                if not is_explicit(spec) and not os.path.exists(path):
                    continue
                link = SerialLink(self, path, spec)
                self.links[path] = link
                new.append(path)
                link.start()
        return new

    def _scan_loop(self):
        while not self._stop.wait(self.scan_s):
            self.scan()

    def _reader_ended(self, link):
        with self._lock:
            if self.links.get(link.path) is link:
                del self.links[link.path]

    def stop(self, timeout=5.0):
        """Stop the scanner and every reader; ports are closed when this returns."""
        self._stop.set()
        with self._lock:
            links = list(self.links.values())
        for link in links:
            link.stop()
        for link in links:
            link.join(timeout)
        if self._scanner is not None:
            self._scanner.join(timeout)

    def link_for(self, device_id):
        with self._lock:
            for link in self.links.values():
                if link.device_id == device_id:
                    return link
        return None

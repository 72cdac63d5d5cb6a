# pingjia.protocol.messages: the message model, one byte layout for serial and MQTT.
#
# A message is   ver u8 | type u8 | flags u8 | dev_len u8 | device_id | boot u32 |
#                seq u32 | payload | mac[16]            (integers little-endian)
# The MAC covers every byte before it (the canonical bytes). `boot` is the
# device's boot count; `seq` is the event's number for journaled events and
# the bridge's command counter for commands (see docs/PROTOCOL.md).
# Payload fields are appended only: a decoder ignores payload bytes after the
# fields it knows, so a newer keypad still talks to an older bridge of the
# same version, and an older keypad to a newer bridge.
import struct
import sys

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from .auth import MAC_LEN, Signer
from .errors import ProtocolError, TRUNCATED, OVERSIZE, VERSION, TYPE, MALFORMED, MAC, DEVICE

VERSION_1 = const(1)
MAX_MESSAGE = const(512)  # bytes, whole message including MAC
MAX_DEVICE_ID = const(32)
_HDR = const(4)  # ver, type, flags, dev_len

# device -> bridge
HELLO = const(0x01)
RATING = const(0x02)
REASON = const(0x03)
UNSOLICITED = const(0x04)
STATUS = const(0x05)
LOG = const(0x06)
# bridge -> device
ACK = const(0x41)
PROMPT = const(0x42)
CANCEL = const(0x43)
TIME = const(0x44)
CONFIG = const(0x45)
IDENTIFY = const(0x46)
QUERY = const(0x47)

# Events that take a seq from the device's persistent counter and are kept in
# its journal until ACKed. Other device messages carry seq 0.
JOURNALED = (RATING, REASON, UNSOLICITED)

# STATUS flags
ST_JOURNAL_FULL = const(0x01)
ST_OFFLINE = const(0x02)  # the keypad thinks its link is down (seen in replays)
ST_CONFIG_ERROR = const(0x04)

RSSI_NONE = const(127)

# The payload layout of every type, one line each: "<type hex> <name> <field>:<kind> ...".
# Field kinds: B u8, b i8, H u16, I u32, s str with u8 length, S str with u16
# length, c list of u16 with u8 count (reason codes), q list of u32 with u8
# count (seqs), k list of (str,str) pairs with u8 count.
# Kept as one string because a keypad has little RAM: on MicroPython a line is
# parsed when a message of its type is built, encoded or decoded (a dict of
# tuples built at import would take ~4 KB of the keypad's heap; the string stays
# in flash with the bytecode). On CPython the parsed table is built once at
# import as SCHEMA, so the bridge's decode does a dict lookup.
_SPECS = """
01 hello fw:s board:s caps:B
02 rating stars:B age_ms:I token:s nth:B dt_ms:I
03 reason ref_seq:I age_ms:I codes:c
04 unsolicited stars:B age_ms:I
05 status uptime_s:I journal_depth:H journal_cap:H free_heap:I rssi:b flags:B last_error:s
06 log level:B text:S
41 ack upto:I seqs:q
42 prompt token:s timeout_s:H reason_required:B text:s
43 cancel token:s
44 time unix_s:I
45 config items:k
46 identify seconds:H
47 query
"""


def _parse(mtype):
    """(name, ((field, kind), ...)) for a message type from _SPECS, or None when unknown."""
    if not isinstance(mtype, int) or not 0 <= mtype <= 0xFF:
        return None
    i = _SPECS.find("\n%02x " % mtype)
    if i < 0:
        return None
    words = _SPECS[i + 4 : _SPECS.find("\n", i + 4)].split()
    return words[0], tuple(tuple(w.split(":")) for w in words[1:])


def _types():
    """Every message type, in _SPECS order."""
    return [int(line[:2], 16) for line in _SPECS.split("\n") if line]


if sys.implementation.name == "micropython":
    # No SCHEMA/NAMES on a keypad (nothing there needs the whole table);
    # _parse(type) gives one type's layout.
    _layout = _parse

else:
    SCHEMA = {t: _parse(t) for t in _types()}
    NAMES = {SCHEMA[t][0]: t for t in SCHEMA}
    _layout = SCHEMA.get


def is_command(mtype):
    """True for bridge -> device types."""
    return mtype >= 0x40


class Message:
    """One decoded or to-be-encoded message. Payload fields are attributes."""

    def __init__(self, mtype, device_id, boot=0, seq=0, **fields):
        layout = _layout(mtype)
        if layout is None:
            raise ProtocolError(TYPE, "unknown message type 0x%02x" % mtype)
        self.type = mtype
        self.device_id = device_id
        self.boot = boot
        self.seq = seq
        self.version = VERSION_1
        self.flags = 0
        for name, kind in layout[1]:  # "BbHI" are the integer kinds
            setattr(self, name, fields.pop(name, 0 if kind in "BbHI" else "" if kind in "sS" else ()))
        if fields:
            raise ProtocolError(MALFORMED, "%s has no field %s" % (self.name, sorted(fields)[0]))

    @property
    def name(self):
        return _layout(self.type)[0]

    def fields(self):
        """The payload as a dict (lists for the list kinds, so it is JSON-ready)."""
        d = {}
        for name, kind in _layout(self.type)[1]:
            v = getattr(self, name)
            if kind in "cq":
                v = list(v)
            elif kind == "k":
                v = [list(p) for p in v]
            d[name] = v
        return d

    def as_dict(self):
        d = {"type": self.name, "device_id": self.device_id, "boot": self.boot, "seq": self.seq}
        d.update(self.fields())
        return d

    def __eq__(self, other):
        return isinstance(other, Message) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return "Message(%r)" % (self.as_dict(),)


def _check_device_id(dev):
    if not 1 <= len(dev) <= MAX_DEVICE_ID:
        raise ProtocolError(MALFORMED, "device id must be 1..%d characters" % MAX_DEVICE_ID)
    for ch in dev:
        if not (ch.isalpha() or ch.isdigit() or ch in "-_.") or ord(ch) > 127:
            raise ProtocolError(MALFORMED, "device id may hold only A-Z a-z 0-9 - _ .")


def _put_str(out, value, lenfmt, limit, name):
    if isinstance(value, str):
        value = value.encode()
    if len(value) > limit:
        raise ProtocolError(OVERSIZE, "field %s is %d bytes, at most %d" % (name, len(value), limit))
    out.extend(struct.pack(lenfmt, len(value)))
    out.extend(value)


def canonical(msg):
    """The bytes the MAC covers: the whole message without its MAC."""
    _check_device_id(msg.device_id)
    dev = msg.device_id.encode()
    out = bytearray(struct.pack("<BBBB", msg.version, msg.type, msg.flags, len(dev)))
    out.extend(dev)
    out.extend(struct.pack("<II", msg.boot & 0xFFFFFFFF, msg.seq & 0xFFFFFFFF))
    for name, kind in _layout(msg.type)[1]:
        v = getattr(msg, name)
        if kind in "BbHI":  # integers: B u8, b i8, H u16, I u32
            lo = -128 if kind == "b" else 0
            hi = 127 if kind == "b" else 0xFF if kind == "B" else 0xFFFF if kind == "H" else 0xFFFFFFFF
            if not lo <= v <= hi:
                raise ProtocolError(MALFORMED, "field %s=%d out of range" % (name, v))
            out.extend(struct.pack("<" + kind, v))
        elif kind == "s":
            _put_str(out, v, "<B", 255, name)
        elif kind == "S":
            _put_str(out, v, "<H", MAX_MESSAGE, name)
        elif kind in "cq":
            if len(v) > 255:
                raise ProtocolError(OVERSIZE, "field %s has %d items" % (name, len(v)))
            out.append(len(v))
            fmt = "<H" if kind == "c" else "<I"
            for x in v:
                out.extend(struct.pack(fmt, x))
        else:  # "k"
            out.append(len(v))
            for key, val in v:
                _put_str(out, key, "<B", 255, name)
                _put_str(out, val, "<B", 255, name)
    _validate(msg)
    return out


def encode(msg, signer):
    """Message -> bytes, MAC appended. `signer` is an auth.Signer or a raw key."""
    if not isinstance(signer, Signer):
        signer = Signer(signer)
    out = canonical(msg)
    out.extend(signer.mac(out))
    if len(out) > MAX_MESSAGE:
        raise ProtocolError(OVERSIZE, "message is %d bytes, at most %d" % (len(out), MAX_MESSAGE))
    return bytes(out)


def peek(data):
    """(version, type, device_id) of raw message bytes without checking the MAC.

    The bridge uses this to find the key to verify with. Raises ProtocolError.
    """
    n = len(data)
    if n > MAX_MESSAGE:
        raise ProtocolError(OVERSIZE, "message is %d bytes, at most %d" % (n, MAX_MESSAGE))
    if n < _HDR:
        raise ProtocolError(TRUNCATED, "message is %d bytes, header needs %d" % (n, _HDR))
    ver, mtype, _flags, dlen = struct.unpack_from("<BBBB", data, 0)
    if ver != VERSION_1:
        raise ProtocolError(VERSION, "protocol version %d not supported (this side speaks 1)" % ver)
    if _layout(mtype) is None:
        raise ProtocolError(TYPE, "unknown message type 0x%02x" % mtype)
    if n < _HDR + dlen + 8 + MAC_LEN:
        raise ProtocolError(TRUNCATED, "message is %d bytes, too short for its header and MAC" % n)
    try:
        dev = bytes(data[_HDR : _HDR + dlen]).decode()
    except UnicodeError:
        raise ProtocolError(MALFORMED, "device id is not ASCII")
    _check_device_id(dev)
    return ver, mtype, dev


def decode(data, key):
    """Raw message bytes -> Message, after checking the MAC.

    `key` is the device key (bytes), an auth.Signer, or a callable
    device_id -> key/Signer/None (None: unknown device). Raises ProtocolError
    whose code names the failed check.
    """
    ver, mtype, dev = peek(data)
    if callable(key) and not isinstance(key, Signer):
        key = key(dev)
        if key is None:
            raise ProtocolError(DEVICE, "unknown device %s" % dev)
    signer = key if isinstance(key, Signer) else Signer(key)
    body = memoryview(data)[: len(data) - MAC_LEN]
    if not signer.verify(body, data[len(data) - MAC_LEN :]):
        raise ProtocolError(MAC, "MAC does not match for device %s" % dev)
    pos = _HDR + len(dev)
    boot, seq = struct.unpack_from("<II", data, pos)
    pos += 8
    msg = Message(mtype, dev, boot, seq)
    msg.flags = data[2]
    end = len(body)
    for name, kind in _layout(mtype)[1]:
        if kind in "BbHI":
            size = struct.calcsize(kind)
            _need(pos, size, end, name)
            v = struct.unpack_from("<" + kind, data, pos)[0]
            pos += size
        elif kind in "sS":
            size = 1 if kind == "s" else 2
            _need(pos, size, end, name)
            ln = data[pos] if size == 1 else struct.unpack_from("<H", data, pos)[0]
            pos += size
            _need(pos, ln, end, name)
            try:
                v = bytes(data[pos : pos + ln]).decode()
            except UnicodeError:
                raise ProtocolError(MALFORMED, "field %s is not UTF-8" % name)
            pos += ln
        elif kind in "cq":
            _need(pos, 1, end, name)
            cnt = data[pos]
            pos += 1
            size = 2 if kind == "c" else 4
            _need(pos, cnt * size, end, name)
            v = struct.unpack_from("<%d%s" % (cnt, "H" if kind == "c" else "I"), data, pos)
            pos += cnt * size
        else:  # "k"
            _need(pos, 1, end, name)
            cnt = data[pos]
            pos += 1
            items = []
            for _ in range(cnt):
                pair = []
                for _half in (0, 1):
                    _need(pos, 1, end, name)
                    ln = data[pos]
                    pos += 1
                    _need(pos, ln, end, name)
                    pair.append(bytes(data[pos : pos + ln]).decode())
                    pos += ln
                items.append(tuple(pair))
            v = tuple(items)
        setattr(msg, name, v)
    _validate(msg)
    return msg


def _need(pos, size, end, name):
    if pos + size > end:
        raise ProtocolError(TRUNCATED, "message ends inside field %s" % name)


def _validate(msg):
    """Meaning checks shared by encode and decode."""
    t = msg.type
    if t in (RATING, UNSOLICITED) and not 1 <= msg.stars <= 5:
        raise ProtocolError(MALFORMED, "stars must be 1..5, got %d" % msg.stars)
    if t in JOURNALED and msg.seq == 0:
        raise ProtocolError(MALFORMED, "journaled events need a seq >= 1")
    if t == RATING and not msg.token:
        raise ProtocolError(MALFORMED, "a rating needs the prompt's case token (else send unsolicited)")
    if t == REASON and not msg.codes:
        raise ProtocolError(MALFORMED, "a reason needs at least one code")

# pingjia.bridge.fastdecode: a host-only fast path for decoding the journaled events.
#
# Why: protocol/messages.decode is written for the keypad as much as for the
# bridge (MicroPython heap, one generic field loop driven by the _SPECS table);
# on the bridge it is a large share of the CPU spent per event under MQTT load
# (peek, a setattr per field, struct.calcsize per field, a closure for the key).
# RATING, UNSOLICITED and REASON are nearly all the traffic, so they get fixed
# precompiled layouts here. The fast path only ever *accepts*: any message it
# is not sure about (another type, a length that doesn't fit, a bad MAC, an
# odd device id, a failed meaning check) returns None and the caller runs the
# protocol decoder, which raises the same ProtocolError as before. So results
# are identical: a test compares both on the golden vectors and random messages.
# protocol/ is shared with the keypad firmware and is not edited for this.
import hashlib
import hmac
import struct

from ..protocol import messages as m
from ..protocol.auth import MAC_LEN, Signer

_BOOT_SEQ = struct.Struct("<II")
_UNSOL = struct.Struct("<BI")  # stars, age_ms
_RATING_HEAD = struct.Struct("<BIB")  # stars, age_ms, token length
_RATING_TAIL = struct.Struct("<BI")  # nth, dt_ms
_REASON_HEAD = struct.Struct("<IIB")  # ref_seq, age_ms, code count
_DEV_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_new = m.Message.__new__
_Message = m.Message


class HostSigner(Signer):
    """protocol.auth.Signer with the pads' SHA-256 states computed once per key and copied per MAC:
    the same 16 bytes (a test compares) for a third of what hmac.digest costs, twice per event on
    the bridge (the event's MAC, its ACK's). The keypad's Signer keeps only the pads' bytes (heap)."""

    def __init__(self, key):
        super().__init__(key)
        self._inner, self._outer = hashlib.sha256(self._ipad), hashlib.sha256(self._opad)

    def mac(self, data):
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]


def _valid_dev(dev_bytes):
    """protocol._check_device_id on ASCII bytes (1..32 of A-Z a-z 0-9 - _ .)."""
    return 1 <= len(dev_bytes) <= m.MAX_DEVICE_ID and _DEV_OK.issuperset(dev_bytes)


def decode_event(data, key_of):
    """A verified Message for a well-formed RATING/UNSOLICITED/REASON, else None (run messages.decode).

    key_of(device_id) -> Signer or None. Returns (device_id, Message or None); device_id is None when
    the header could not be read."""
    n = len(data)
    if n > m.MAX_MESSAGE or n < 4 or data[0] != m.VERSION_1:
        return None, None
    mtype, dlen = data[1], data[3]
    if mtype not in _PAYLOAD:
        return None, None
    pos = 4 + dlen
    end = n - MAC_LEN
    if pos + 8 > end:
        return None, None
    dev_b = bytes(data[4:pos])
    if not _valid_dev(dev_b):
        return None, None
    dev = dev_b.decode()
    signer = key_of(dev)
    if signer is None:
        return dev, None
    body = data[:end]
    if not hmac.compare_digest(signer.mac(body), bytes(data[end:])):
        return dev, None
    boot, seq = _BOOT_SEQ.unpack_from(data, pos)
    if seq == 0:
        return dev, None
    fields = _PAYLOAD[mtype](data, pos + 8, end)
    if fields is None:
        return dev, None
    msg = _new(_Message)
    d = {"type": mtype, "device_id": dev, "boot": boot, "seq": seq, "version": m.VERSION_1, "flags": data[2]}
    d.update(fields)
    msg.__dict__ = d
    return dev, msg


def _unsolicited(data, pos, end):
    if pos + 5 > end:
        return None
    stars, age = _UNSOL.unpack_from(data, pos)
    if not 1 <= stars <= 5:
        return None
    return {"stars": stars, "age_ms": age}


def _rating(data, pos, end):
    if pos + 6 > end:
        return None
    stars, age, tl = _RATING_HEAD.unpack_from(data, pos)
    pos += 6
    if not 1 <= stars <= 5 or tl == 0 or pos + tl + 5 > end:
        return None
    try:
        token = bytes(data[pos:pos + tl]).decode()
    except UnicodeError:
        return None
    nth, dt = _RATING_TAIL.unpack_from(data, pos + tl)
    return {"stars": stars, "age_ms": age, "token": token, "nth": nth, "dt_ms": dt}


def _reason(data, pos, end):
    if pos + 9 > end:
        return None
    ref, age, cnt = _REASON_HEAD.unpack_from(data, pos)
    pos += 9
    if cnt == 0 or pos + 2 * cnt > end:
        return None
    return {"ref_seq": ref, "age_ms": age, "codes": struct.unpack_from("<%dH" % cnt, data, pos)}


_PAYLOAD = {m.UNSOLICITED: _unsolicited, m.RATING: _rating, m.REASON: _reason}

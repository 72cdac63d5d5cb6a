# pingjia.protocol.framing: serial framing with resync, CRC and text outside frames.
#
# frame = MAGIC 0xF5 | len u16 LE | message (len bytes) | crc32 u32 LE
# The CRC (CRC-32/ISO-HDLC, see crc.py) covers the two length bytes and the
# message. 0xF5 never occurs in UTF-8 text, so text a board prints on the same
# port (a MicroPython traceback, a boot banner) is told apart from frames and
# surfaces as device log lines. After a bad CRC, a bad length or a cut frame
# the decoder drops only the magic byte and scans on, so it finds the next good
# frame; a frame passes only with a matching CRC.
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from .crc import crc32
from .errors import ProtocolError, CRC, OVERSIZE, TRUNCATED
from .messages import MAX_MESSAGE

MAGIC = const(0xF5)
_HEADER = const(3)  # magic + length
_TRAILER = const(4)  # crc32
OVERHEAD = const(7)
_MIN_MESSAGE = const(29)  # header 4 + 1-char device id + boot/seq 8 + MAC 16 (QUERY has no payload)
_MAX_TEXT_LINE = const(256)

FRAME = const(1)  # item kinds yielded by Decoder.feed
TEXT = const(2)
ERROR = const(3)


def encode(message):
    """Message bytes -> one frame."""
    n = len(message)
    if n > MAX_MESSAGE:
        raise ProtocolError(OVERSIZE, "message is %d bytes, at most %d" % (n, MAX_MESSAGE))
    out = bytearray(_HEADER + n + _TRAILER)
    out[0] = MAGIC
    struct.pack_into("<H", out, 1, n)
    out[_HEADER : _HEADER + n] = message
    struct.pack_into("<I", out, _HEADER + n, crc32(memoryview(out)[1 : _HEADER + n]))
    return bytes(out)


class Decoder:
    """Turns a byte stream into frames, text lines and errors.

    feed(data) returns a list of (kind, value): (FRAME, message_bytes),
    (TEXT, line_bytes) for bytes outside frames, one line at a time without
    the line end, or (ERROR, ProtocolError) for a frame that failed a check.
    Call idle() when the line has been quiet for a while (a cut frame then
    gives up its claim on the buffer) and flush() at close.
    """

    def __init__(self, max_message=MAX_MESSAGE):
        self.max_message = max_message
        self._buf = bytearray()
        self._text = bytearray()
        self.frames = 0  # counters for status
        self.errors = 0

    def feed(self, data):
        self._buf.extend(data)
        out = []
        self._scan(out, False)
        return out

    def idle(self):
        """The line went quiet: a pending partial frame is a cut frame."""
        out = []
        self._scan(out, True)
        return out

    def pending(self):
        """Bytes held for a frame not yet complete (0: nothing waits; idle() has work when > 0)."""
        return len(self._buf)

    def pending_text(self):
        """Text received outside frames but not yet ended by a newline.

        A keypad looks here for Ctrl-C (0x03): mpremote sends "\r\x03" with no
        newline after it.
        """
        return bytes(self._text)

    def flush(self):
        """At close: everything pending surfaces (partial frame as an error, text)."""
        out = self.idle()
        if self._text:
            out.append((TEXT, bytes(self._text)))
            self._text = bytearray()
        return out

    def _text_bytes(self, chunk, out):
        # Split text into lines; very long lines are cut so memory stays bounded.
        t = self._text
        for b in chunk:
            if b == 0x0A:
                if t and t[-1] == 0x0D:
                    t = t[:-1]
                out.append((TEXT, bytes(t)))
                t = bytearray()
            else:
                t.append(b)
                if len(t) >= _MAX_TEXT_LINE:
                    out.append((TEXT, bytes(t)))
                    t = bytearray()
        self._text = t

    def _scan(self, out, idle):
        buf = self._buf
        while buf:
            i = buf.find(b"\xf5")
            if i < 0:
                self._text_bytes(buf, out)
                buf = bytearray()
                break
            if i:
                self._text_bytes(buf[:i], out)
                buf = buf[i:]
            if len(buf) < _HEADER:
                if idle:
                    self._bad(out, ProtocolError(TRUNCATED, "frame cut inside its header"))
                    buf = buf[1:]
                    continue
                break
            n = buf[1] | (buf[2] << 8)
            if n > self.max_message or n < _MIN_MESSAGE:
                self._bad(out, ProtocolError(OVERSIZE, "frame length %d outside %d..%d" % (n, _MIN_MESSAGE, self.max_message)))
                buf = buf[1:]
                continue
            total = _HEADER + n + _TRAILER
            if len(buf) < total:
                if idle:
                    self._bad(out, ProtocolError(TRUNCATED, "frame cut after %d of %d bytes" % (len(buf), total)))
                    buf = buf[1:]
                    continue
                break
            want = struct.unpack_from("<I", buf, _HEADER + n)[0]
            if crc32(memoryview(buf)[1 : _HEADER + n]) != want:
                self._bad(out, ProtocolError(CRC, "frame CRC mismatch (length %d)" % n))
                buf = buf[1:]
                continue
            if self._text:  # text before a frame ends at the frame
                out.append((TEXT, bytes(self._text)))
                self._text = bytearray()
            out.append((FRAME, bytes(buf[_HEADER : _HEADER + n])))
            self.frames += 1
            buf = buf[total:]
        self._buf = buf

    def _bad(self, out, err):
        self.errors += 1
        out.append((ERROR, err))

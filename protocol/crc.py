# pingjia.protocol.crc: CRC-32/ISO-HDLC (the zlib/Ethernet CRC) for serial frames.
#
# Parameters: width 32, poly 0x04C11DB7 (reflected 0xEDB88320), init 0xFFFFFFFF,
# refin/refout true, xorout 0xFFFFFFFF. Check value: crc32(b"123456789") ==
# 0xCBF43926. binascii.crc32 computes exactly this in C on CPython and on most
# MicroPython ports; the table fallback keeps boards without it working.
import sys


def builtin_module(name):
    """The port's built-in (C) module `name`, or ImportError.

    On MicroPython a built-in module can be extended by a Python module of the
    same name found on sys.path (the WebAssembly port freezes micropython-lib's
    binascii.py and os/ that way); importing with an empty sys.path gets the
    C module itself, which costs no heap and is not put in sys.modules. Used
    for binascii here and for os in firmware/journal.py. CPython: a plain import.
    """
    if sys.implementation.name != "micropython":
        return __import__(name)
    path = sys.path
    sys.path = []
    try:
        return __import__(name)
    finally:
        sys.path = path


try:
    _crc32 = builtin_module("binascii").crc32
except (ImportError, AttributeError):  # pragma: no cover - only on ports built without it
    _crc32 = None

CHECK = 0xCBF43926

_table = None


def _table_crc32(data, crc=0):
    global _table
    if _table is None:
        _table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            _table.append(c)
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32(data, crc=0):
    """CRC-32/ISO-HDLC of `data` (bytes-like), continuing from `crc`."""
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    return _table_crc32(data, crc)

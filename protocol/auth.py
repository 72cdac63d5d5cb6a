# pingjia.protocol.auth: HMAC-SHA256 truncated to 16 bytes, and a constant-time compare.
#
# Every message carries MAC = HMAC-SHA256(device_key, canonical_bytes)[:16]
# where canonical_bytes is the message without its MAC (it begins with the
# version, type, device id, boot and seq, so a MAC can't be moved between
# devices or events). HMAC is written out here because MicroPython ports do
# not all ship the `hmac` module; hashlib.sha256 is everywhere.
import hashlib
import sys

# On CPython the C implementation in `hmac` computes the same HMAC several
# times faster; the pure version below is what runs on a keypad.
_fast = None
if sys.implementation.name == "cpython":
    import hmac as _hmac

    _fast = _hmac

KEY_LEN = 32  # per-device secret, provisioned at flash time
MAC_LEN = 16  # truncated HMAC-SHA256, as RFC 4868's HMAC-SHA-256-128
_BLOCK = 64


class Signer:
    """Holds one device key with its HMAC pads precomputed."""

    def __init__(self, key):
        if len(key) != KEY_LEN:
            raise ValueError("device key must be %d bytes, got %d" % (KEY_LEN, len(key)))
        k = bytes(key) + bytes(_BLOCK - KEY_LEN)
        if _fast is not None:  # CPython's hmac takes the key itself; a keypad keeps only the pads
            self._key = bytes(key)
        self._ipad = bytes([b ^ 0x36 for b in k])
        self._opad = bytes([b ^ 0x5C for b in k])

    def mac(self, data):
        """The 16-byte MAC of `data`."""
        if _fast is not None:
            return _fast.digest(self._key, data, "sha256")[:MAC_LEN]
        inner = hashlib.sha256(self._ipad)
        inner.update(data)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]

    def verify(self, data, mac):
        """True when `mac` is the MAC of `data`; compares in constant time."""
        return equal(self.mac(data), mac)


def hmac_sha256(key, data):
    """Full 32-byte HMAC-SHA256 for any key length (used by tests and upstream signing)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    k = bytes(key) + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in k]))
    inner.update(data)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in k]))
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Constant-time equality of two byte strings (time depends only on length)."""
    if _fast is not None:
        return _fast.compare_digest(bytes(a), bytes(b))
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0

"""Request signing for the upstream POST: HMAC-SHA256 or HMAC-SM3 (国密).

The string to sign (UTF-8 bytes):
    METHOD \\n PATH \\n X-Timestamp \\n X-Nonce \\n hex(H(body))
where H is SHA-256 for hmac-sha256 and SM3 for hmac-sm3; the MAC is
HMAC-H(key, string) in lowercase hex, sent as X-Signature with X-Sign-Alg,
X-App-Id, X-Timestamp (UNIX seconds) and X-Nonce. The receiver rejects a wrong
MAC and a timestamp more than `skew` seconds away from its clock.

SM3 comes from OpenSSL through hashlib (`hashlib.new('sm3')`); Python builds
whose OpenSSL lacks SM3 get a SigningError naming the cause at config check.
"""
import hashlib
import hmac
import os
import time

ALGS = {"hmac-sha256": "sha256", "hmac-sm3": "sm3"}


class SigningError(ValueError):
    pass


def available(alg):
    """None when `alg` can be used here, else the reason it cannot."""
    digest = ALGS.get(alg)
    if digest is None:
        return "unknown signing algorithm %r (known: %s)" % (alg, ", ".join(sorted(ALGS)))
    if digest not in hashlib.algorithms_available:
        return ("%s needs %s from OpenSSL, and this Python's hashlib does not provide it "
                "(hashlib.algorithms_available lacks %r); use hmac-sha256 or a Python linked "
                "against an OpenSSL with SM3" % (alg, digest.upper(), digest))
    try:
        hashlib.new(digest, b"")
    except ValueError as e:  # listed but disabled (e.g. FIPS mode)
        return "%s: hashlib.new(%r) fails: %s" % (alg, digest, e)
    return None


def _digest(alg):
    why = available(alg)
    if why:
        raise SigningError(why)
    return ALGS[alg]


def string_to_sign(method, path, ts, nonce, body, alg):
    d = _digest(alg)
    return ("%s\n%s\n%s\n%s\n%s" % (method.upper(), path, ts, nonce, hashlib.new(d, body).hexdigest())).encode()


def mac(key, method, path, ts, nonce, body, alg):
    return hmac.new(key, string_to_sign(method, path, ts, nonce, body, alg), _digest(alg)).hexdigest()


def key_bytes(key):
    """Key from config: 'hex:...' or plain text (UTF-8)."""
    if isinstance(key, bytes):
        return key
    if key.startswith("hex:"):
        return bytes.fromhex(key[4:])
    return key.encode()


def sign_headers(key, method, path, body, alg="hmac-sha256", app_id="", now=None):
    ts = str(int(time.time() if now is None else now))
    nonce = os.urandom(8).hex()
    return {
        "X-App-Id": app_id,
        "X-Sign-Alg": alg,
        "X-Timestamp": ts,
        "X-Nonce": nonce,
        "X-Signature": mac(key_bytes(key), method, path, ts, nonce, body, alg),
    }


def verify(key, method, path, body, headers, alg=None, skew=300, now=None):
    """None when the request's signature is good, else the reason it is not.

    `headers`: a mapping with case-insensitive get (http.server's message works).
    `alg`: the algorithm the receiver insists on (None: the one the request names).
    """
    got_alg = headers.get("X-Sign-Alg") or ""
    if alg and got_alg != alg:
        return "signature algorithm %r, expected %r" % (got_alg, alg)
    ts, nonce, sig = headers.get("X-Timestamp"), headers.get("X-Nonce"), headers.get("X-Signature")
    if not (ts and nonce and sig):
        return "unsigned request (X-Timestamp, X-Nonce, X-Signature required)"
    try:
        t = int(ts)
    except ValueError:
        return "bad X-Timestamp"
    now = time.time() if now is None else now
    if abs(now - t) > skew:
        return "X-Timestamp %d is %ds away from the receiver's clock" % (t, int(now - t))
    try:
        want = mac(key_bytes(key), method, path, ts, nonce, body, got_alg)
    except SigningError as e:
        return str(e)
    if not hmac.compare_digest(want, sig.lower()):
        return "bad signature"
    return None

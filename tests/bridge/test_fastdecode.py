"""bridge/fastdecode.py (the hub's host-only fast path) gives exactly what protocol decode gives,
or None so the hub falls back to protocol decode (which raises the ProtocolError)."""
import json
import random
from binascii import unhexlify
from pathlib import Path

from pingjia.bridge.fastdecode import decode_event
from pingjia.protocol import framing
from pingjia.protocol import messages as m
from pingjia.protocol.auth import Signer
from pingjia.protocol.errors import ProtocolError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "protocol_v1.json"


def _both(raw, signers):
    fast = decode_event(raw, signers.get)[1]
    try:
        slow = m.decode(raw, signers.get)
    except ProtocolError:
        slow = None
    return fast, slow


def _same(fast, slow):
    if fast is None:
        return True  # the hub then runs protocol decode itself
    assert slow is not None, "fast path accepted what protocol decode rejects"
    assert type(fast) is m.Message
    assert fast.__dict__ == slow.__dict__
    assert list(fast.__dict__) == list(slow.__dict__)
    return True


def test_golden_vectors():
    doc = json.loads(VECTORS.read_text())
    signers = {d: Signer(unhexlify(k)) for d, k in doc["keys"].items()}
    journaled = 0
    for v in doc["vectors"]:
        dec = framing.Decoder()
        for kind, value in dec.feed(unhexlify(v["frame"])) + dec.flush():
            if kind != framing.FRAME:
                continue
            fast, slow = _both(value, signers)
            _same(fast, slow)
            if slow is not None and slow.type in m.JOURNALED:
                assert fast is not None, v["name"]
                journaled += 1
    assert journaled >= 4


def test_random_messages_and_mutations():
    rnd = random.Random(7)
    signers = {"KP-%02d" % i: Signer(bytes(rnd.randrange(256) for _ in range(32))) for i in range(3)}
    devs = sorted(signers)
    accepted = 0
    for _ in range(3000):
        dev = rnd.choice(devs)
        t = rnd.choice([m.RATING, m.UNSOLICITED, m.REASON, m.HELLO, m.STATUS])
        f = {}
        if t == m.RATING:
            f = dict(stars=rnd.randint(1, 5), age_ms=rnd.randrange(2**32), token="t%d" % rnd.randrange(10**6),
                     nth=rnd.randrange(256), dt_ms=rnd.randrange(2**32))
        elif t == m.UNSOLICITED:
            f = dict(stars=rnd.randint(1, 5), age_ms=rnd.randrange(2**32))
        elif t == m.REASON:
            f = dict(ref_seq=rnd.randrange(1, 2**32), age_ms=rnd.randrange(1000), codes=tuple(rnd.randrange(65536) for _ in range(rnd.randint(1, 5))))
        elif t == m.HELLO:
            f = dict(fw="1.0", board="x", caps=1)
        seq = 0 if t in (m.HELLO, m.STATUS) else rnd.randrange(1, 2**32)
        raw = m.encode(m.Message(t, dev, rnd.randrange(2**32), seq, **f), signers[dev])
        variants = [raw]
        for _ in range(3):  # random corruption: bytes flipped, cut, or re-signed after a change
            b = bytearray(raw)
            op = rnd.randrange(4)
            if op == 0:
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            elif op == 1:
                b = b[:rnd.randrange(len(b))]
            elif op == 2 and len(b) > 20:
                i = rnd.randrange(len(b) - 16)
                b[i] = rnd.randrange(256)
                b = b[:-16] + signers[dev].mac(bytes(b[:-16]))  # well signed, maybe malformed
            else:
                b = bytearray(b[:-16] + bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 6))))
                b = b + signers[dev].mac(bytes(b))  # trailing payload bytes a newer keypad might add
            variants.append(bytes(b))
        for r in variants:
            fast, slow = _both(r, signers)
            _same(fast, slow)
            if fast is not None:
                accepted += 1
            elif slow is not None and slow.type in m.JOURNALED:
                raise AssertionError("fast path refused a valid journaled event %r" % slow)
    assert accepted > 2000


def test_hub_uses_same_result(tmp_path):
    """Unknown devices and bad MACs still reach the protocol decoder's rejects (fast path returns None)."""
    s = Signer(bytes(32))
    raw = m.encode(m.Message(m.UNSOLICITED, "KP-1", 1, 5, stars=3, age_ms=0), s)
    assert decode_event(raw, {}.get) == ("KP-1", None)
    assert decode_event(raw[:-1] + bytes([raw[-1] ^ 1]), {"KP-1": s}.get) == ("KP-1", None)
    dev, msg = decode_event(raw, {"KP-1": s}.get)
    assert msg == m.decode(raw, s) and msg.stars == 3 and msg.seq == 5


def test_host_signer_macs_equal_the_protocol_signer():
    """The hub signs ACKs and checks events with HostSigner: same 16 bytes as the keypad's Signer and
    as hmac, for any key and message length (over SHA-256's 64-byte block too)."""
    import hashlib
    import hmac

    from pingjia.bridge.fastdecode import HostSigner

    rnd = random.Random(7)
    for n in (0, 1, 55, 56, 63, 64, 65, 127, 128, 200, 511):
        key, data = rnd.randbytes(32), rnd.randbytes(n)
        host = HostSigner(key)
        assert host.mac(data) == Signer(key).mac(data) == hmac.new(key, data, hashlib.sha256).digest()[:16]
        assert host.mac(data) == host.mac(data)  # the stored states are copied, not consumed
        assert host.mac(data + b"x") != host.mac(data)

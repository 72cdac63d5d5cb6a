"""Property tests: round-trips, and a decoder that survives garbage, cut frames and bit flips."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pingjia.protocol import framing
from pingjia.protocol import messages as M
from pingjia.protocol.errors import ProtocolError

KEY = bytes(range(32))
DEVICE_IDS = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=32)
U8, U16, U32 = st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
SHORT = st.text(max_size=40)


def _message(mtype, dev, boot, seq, draw):
    """A valid message of `mtype` with fields drawn from strategies."""
    kinds = {
        "B": U8,
        "b": st.integers(-128, 127),
        "H": U16,
        "I": U32,
        "s": SHORT.filter(lambda s: len(s.encode()) <= 255),
        "S": st.text(max_size=120),
        "c": st.lists(U16, max_size=8).map(tuple),
        "q": st.lists(U32, max_size=20).map(tuple),
        "k": st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=5).map(tuple),
    }
    fields = {name: draw(kinds[kind]) for name, kind in M.SCHEMA[mtype][1]}
    if mtype in (M.RATING, M.UNSOLICITED):
        fields["stars"] = draw(st.integers(1, 5))
    if mtype == M.RATING and not fields["token"]:
        fields["token"] = "T"
    if mtype == M.REASON and not fields["codes"]:
        fields["codes"] = (501,)
    if mtype in M.JOURNALED and seq == 0:
        seq = 1
    return M.Message(mtype, dev, boot, seq, **fields)


@st.composite
def messages(draw):
    mtype = draw(st.sampled_from(sorted(M.SCHEMA)))
    return _message(mtype, draw(DEVICE_IDS), draw(U32), draw(U32), draw)


@given(messages())
def test_encode_decode_round_trip(msg):
    raw = M.encode(msg, KEY)
    back = M.decode(raw, KEY)
    assert back == msg
    assert M.encode(back, KEY) == raw  # canonical: one encoding per message


@given(st.lists(messages(), min_size=1, max_size=6), st.data())
def test_frames_survive_any_chunking(msgs, data):
    stream = b"".join(framing.encode(M.encode(m, KEY)) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    dec, items, last = framing.Decoder(), [], 0
    for c in cuts + [len(stream)]:
        items += dec.feed(stream[last:c])
        last = c
    items += dec.flush()
    assert [M.decode(v, KEY) for k, v in items if k == framing.FRAME] == msgs
    assert all(k == framing.FRAME for k, _ in items)


# A stream is a mix of good frames and damage: random garbage, frames cut
# short, frames with flipped bits. Whatever it is, the decoder must not raise,
# must only yield frames whose CRC and MAC hold, and must find every intact
# frame that follows the damage.
PIECES = st.one_of(
    st.tuples(st.just("good"), messages()),
    st.tuples(st.just("garbage"), st.binary(max_size=80)),
    st.tuples(st.just("magic-garbage"), st.binary(max_size=30).map(lambda b: b"\xf5" + b)),
    st.tuples(st.just("cut"), messages(), st.floats(0, 0.99)),
    st.tuples(st.just("flip"), messages(), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("text"), st.text(max_size=60).map(lambda t: (t + "\n").encode())),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=12), st.integers(1, 64))
def test_decoder_survives_damage_and_finds_every_intact_frame(pieces, chunk):
    stream, intact = b"", []
    for p in pieces:
        kind = p[0]
        if kind == "good":
            stream += framing.encode(M.encode(p[1], KEY))
            intact.append(p[1])
        elif kind in ("garbage", "magic-garbage", "text"):
            stream += p[1]
        elif kind == "cut":
            fr = framing.encode(M.encode(p[1], KEY))
            stream += fr[: int(len(fr) * p[2])]
        else:
            fr = bytearray(framing.encode(M.encode(p[1], KEY)))
            fr[p[2] % len(fr)] ^= 1 << p[3]
            stream += bytes(fr)
    dec, items = framing.Decoder(), []
    for i in range(0, len(stream), chunk):
        items += dec.feed(stream[i : i + chunk])
    items += dec.flush()
    found = []
    for kind, value in items:
        assert kind in (framing.FRAME, framing.TEXT, framing.ERROR)
        if kind == framing.ERROR:
            assert isinstance(value, ProtocolError) and value.code in ("crc", "oversize", "truncated")
        if kind == framing.FRAME:
            found.append(M.decode(value, KEY))  # raises if CRC passed but MAC fails
    # Every intact frame is found, in order. A flipped-bit frame can only come
    # through if the flip hit nothing covered (impossible: CRC+MAC cover all).
    it = iter(found)
    assert all(any(m == f for f in it) for m in intact), "an intact frame after damage was not found"


@given(st.binary(max_size=600))
def test_decode_of_arbitrary_bytes_raises_only_protocol_error(data):
    try:
        M.decode(data, KEY)
    except ProtocolError as e:
        assert e.code in ("truncated", "oversize", "version", "type", "malformed", "mac")


@given(messages(), st.integers(0, 10_000), st.integers(0, 7))
def test_any_bit_flip_is_caught_by_the_mac(msg, pos, bit):
    raw = bytearray(M.encode(msg, KEY))
    raw[pos % len(raw)] ^= 1 << bit
    try:
        M.decode(bytes(raw), KEY)
    except ProtocolError as e:
        assert e.code in ("mac", "version", "type", "truncated", "malformed")
    else:
        raise AssertionError("a flipped message decoded")


def test_typed_errors_name_the_failed_check():
    def code(fn):
        try:
            fn()
        except ProtocolError as e:
            assert str(e).startswith(e.code)
            return e.code
        raise AssertionError("no error")

    good = M.encode(M.Message(M.RATING, "KP-1", 1, 5, stars=5, token="T"), KEY)
    assert code(lambda: M.encode(M.Message(M.RATING, "KP-1", 1, 5, stars=6, token="T"), KEY)) == "malformed"
    assert code(lambda: M.encode(M.Message(M.RATING, "KP-1", 1, 0, stars=5, token="T"), KEY)) == "malformed"  # seq 0
    assert code(lambda: M.encode(M.Message(M.UNSOLICITED, "bad id!", 1, 5, stars=5), KEY)) == "malformed"
    assert code(lambda: M.encode(M.Message(M.LOG, "KP-1", text="x" * 600), KEY)) == "oversize"
    assert code(lambda: M.Message(0x99, "KP-1")) == "type"
    assert code(lambda: M.Message(M.ACK, "KP-1", nonsense=1)) == "malformed"
    assert code(lambda: M.decode(good, bytes(32))) == "mac"
    assert code(lambda: M.decode(good, lambda dev: None)) == "device"
    assert code(lambda: M.decode(good[:10], KEY)) == "truncated"
    assert code(lambda: framing.encode(bytes(513))) == "oversize"


def test_pure_hmac_equals_the_c_hmac_used_on_cpython():
    """The keypad computes HMAC in pure Python; the host may take CPython's C path. Same bytes."""
    import hashlib
    import hmac

    from pingjia.protocol import auth

    key, data = bytes(range(1, 33)), b"canonical bytes" * 7
    saved = auth._fast
    try:
        auth._fast = None
        pure = auth.Signer(key).mac(data)
        assert auth.equal(pure, pure) and not auth.equal(pure, bytes(16))
    finally:
        auth._fast = saved
    assert pure == auth.Signer(key).mac(data) == hmac.new(key, data, hashlib.sha256).digest()[:16]

"""Regenerate tests/vectors/protocol_v1.json, the protocol's golden vectors.

    .venv/bin/python tests/vectors/make_vectors.py

Deterministic (fixed keys, no randomness). The file is committed: a change to
the wire format shows up as a diff here, and tests/protocol/test_vectors.py
checks that CPython and MicroPython both decode every vector as stated.
Run only when the format is meant to change (and bump the version if old
keypads would no longer be understood).
"""
import json
import struct
from pathlib import Path

from pingjia.protocol import framing
from pingjia.protocol import messages as M
from pingjia.protocol.crc import crc32

KEY = bytes(range(32))  # KP-0001
KEY2 = bytes(range(32, 64))  # KP-0002
DEV = "KP-0001"


def frame_of(raw):
    return framing.encode(raw)


def reframe(raw):
    """A frame with a correct CRC around arbitrary message bytes."""
    out = bytearray(b"\xf5" + struct.pack("<H", len(raw)) + raw)
    out += struct.pack("<I", crc32(bytes(out[1:])))
    return bytes(out)


def good():
    m = M.Message
    return [
        ("hello", m(M.HELLO, DEV, 7, 0, fw="1.0.0", board="rp2-pico", caps=1)),
        ("rating-5-prompted", m(M.RATING, DEV, 7, 42, stars=5, age_ms=120, token="C7K2M9QX", nth=1, dt_ms=0)),
        ("rating-misspress-2nd", m(M.RATING, DEV, 7, 43, stars=4, age_ms=80, token="C7K2M9QX", nth=2, dt_ms=1500)),
        ("rating-1-star", m(M.RATING, DEV, 7, 44, stars=1, age_ms=3_600_000, token="ZZ11YY22", nth=1, dt_ms=0)),
        ("reason", m(M.REASON, DEV, 7, 45, ref_seq=44, age_ms=2000, codes=(501, 502))),
        ("unsolicited", m(M.UNSOLICITED, DEV, 7, 46, stars=3, age_ms=10)),
        (
            "status",
            m(M.STATUS, DEV, 7, 0, uptime_s=86400, journal_depth=3, journal_cap=2000, free_heap=71234, rssi=-61, flags=0, last_error=""),
        ),
        (
            "status-journal-full",
            m(M.STATUS, DEV, 7, 0, uptime_s=5, journal_depth=2000, journal_cap=2000, free_heap=70000, rssi=127, flags=M.ST_JOURNAL_FULL, last_error="journal full"),
        ),
        ("log-utf8", m(M.LOG, DEV, 7, 0, level=2, text="按键 5 卡住 (key 5 stuck)")),
        ("ack-per-seq", m(M.ACK, DEV, 7, 1001, upto=0, seqs=(42, 43))),
        ("ack-cumulative", m(M.ACK, DEV, 7, 1002, upto=46, seqs=())),
        ("prompt", m(M.PROMPT, DEV, 7, 1003, token="C7K2M9QX", timeout_s=60, reason_required=1, text="3号窗口 王芳")),
        ("cancel", m(M.CANCEL, DEV, 7, 1004, token="C7K2M9QX")),
        ("time", m(M.TIME, DEV, 7, 1005, unix_s=1795305600)),
        ("config", m(M.CONFIG, DEV, 7, 1006, items=(("grace_ms", "3000"), ("heartbeat_s", "30")))),
        ("identify", m(M.IDENTIFY, DEV, 7, 1007, seconds=10)),
        ("query", m(M.QUERY, DEV, 7, 1008)),
        ("other-device", m(M.RATING, "KP-0002", 1, 1, stars=2, age_ms=0, token="AB", nth=1, dt_ms=0)),
    ]


def main():
    vectors = []
    keys = {DEV: KEY.hex(), "KP-0002": KEY2.hex()}
    for name, msg in good():
        key = KEY2 if msg.device_id == "KP-0002" else KEY
        raw = M.encode(msg, key)
        vectors.append({"name": name, "frame": frame_of(raw).hex(), "expect": {"message": msg.as_dict()}})

    rating = M.encode(good()[1][1], KEY)
    fr = frame_of(rating)

    def bad(name, frame, code, note):
        vectors.append({"name": name, "frame": frame.hex(), "expect": {"error": code}, "note": note})

    flipped = bytearray(fr)
    flipped[20] ^= 0x01
    bad("bad-crc", bytes(flipped), "crc", "one bit flipped inside the message; CRC no longer matches")
    forged = bytearray(rating)
    forged[forged.index(b"\x05x")] = 1  # stars 5 -> 1, MAC kept
    bad("bad-mac-tampered", reframe(bytes(forged)), "mac", "stars changed from 5 to 1 and the CRC recomputed; the MAC catches it")
    bad("bad-mac-wrong-key", reframe(M.encode(good()[1][1], KEY2)), "mac", "signed with another device's key")
    bad("truncated-frame", fr[:30], "truncated", "the frame is cut after 30 bytes and the line goes quiet")
    bad("truncated-message", reframe(rating[:30] + M.Signer(KEY).mac(rating[:30])), "truncated", "CRC and MAC valid, but the message ends inside its token field")
    bad("oversize-length", b"\xf5" + struct.pack("<H", 600) + bytes(600) + b"\0\0\0\0", "oversize", "declared length 600 > 512")
    unknown_ver = bytearray(rating)
    unknown_ver[0] = 2
    bad("unknown-version", reframe(bytes(unknown_ver)), "version", "version byte 2; this side speaks 1")
    unknown_type = bytearray(rating)
    unknown_type[1] = 0x3F
    bad("unknown-type", reframe(bytes(unknown_type)), "type", "type 0x3f is not defined")
    bad("unknown-device", reframe(M.encode(M.Message(M.RATING, "KP-9999", 1, 1, stars=5, age_ms=0, token="X", nth=1, dt_ms=0), KEY)), "device", "no key for KP-9999")
    bad_stars = bytearray(rating)
    bad_stars[bad_stars.index(b"\x05x")] = 9
    bad_stars = bytes(bad_stars[:-16]) + M.Signer(KEY).mac(bytes(bad_stars[:-16]))
    bad("malformed-stars", reframe(bad_stars), "malformed", "stars 9 with a valid MAC: outside 1..5")

    # A stream: boot text, a traceback, a cut frame, then a good frame, garbage, a good frame.
    status = frame_of(M.encode(good()[6][1], KEY))
    stream = b"MicroPython v1.29.0\r\nTraceback (most recent call last):\r\n  File \"main.py\", line 1\r\n" + fr[:25] + fr + b"\x00\xff\xf5" + status
    vectors.append(
        {
            "name": "stream-resync",
            "frame": stream.hex(),
            "expect": {
                "items": [
                    {"text_hex": b"MicroPython v1.29.0".hex()},
                    {"text_hex": b"Traceback (most recent call last):".hex()},
                    {"text_hex": b'  File "main.py", line 1'.hex()},
                    {"error": "crc"},
                    {"text_hex": fr[1:25].hex()},
                    {"message": good()[1][1].as_dict()},
                    {"error": "oversize"},
                    {"text_hex": "00ff"},
                    {"message": good()[6][1].as_dict()},
                ]
            },
            "note": "text outside frames becomes log lines (a text line ends at a newline or at the next good frame); the cut frame costs one CRC error; the stray F5 reads a length over 512; both good frames are found",
        }
    )
    doc = {
        "about": "pingjia wire protocol v1 golden vectors; see docs/PROTOCOL.md. frame = hex of the serial bytes; keys by device id.",
        "crc": {"algorithm": "CRC-32/ISO-HDLC", "input": "123456789", "check": "cbf43926"},
        "keys": keys,
        "vectors": vectors,
    }
    path = Path(__file__).with_name("protocol_v1.json")
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print("wrote %d vectors to %s" % (len(vectors), path))


if __name__ == "__main__":
    main()

# run_vectors.py: decode the golden vectors; runs unchanged on CPython and MicroPython.
#
#   CPython:     python tests/vectors/run_vectors.py tests/vectors/protocol_v1.json
#   MicroPython: node firmware/virtual/mprun.mjs --lib protocol \
#                    --file tests/vectors/protocol_v1.json:/v.json tests/vectors/run_vectors.py /v.json
# Prints one JSON object per vector: {"name", "items": [...]} where each item is
# {"message": {...}, "reencoded": bool} | {"error": code} | {"text_hex": hex}.
# tests/protocol/test_vectors.py compares both runs with each other and with
# the expectations in the file.
import json
import sys
from binascii import hexlify, unhexlify

from pingjia.protocol import framing
from pingjia.protocol import messages as M
from pingjia.protocol.crc import crc32
from pingjia.protocol.errors import ProtocolError


def argv():
    try:
        import mprun_args  # set by firmware/virtual/mprun.mjs under MicroPython

        return mprun_args.ARGV
    except ImportError:
        return sys.argv


def run(doc):
    keys = {}
    for dev in doc["keys"]:
        keys[dev] = unhexlify(doc["keys"][dev])
    check = "%08x" % crc32(doc["crc"]["input"].encode())
    print(json.dumps({"name": "crc-check", "items": [{"crc": check}]}))
    for v in doc["vectors"]:
        dec = framing.Decoder()
        raw_items = dec.feed(unhexlify(v["frame"])) + dec.flush()
        items = []
        for kind, value in raw_items:
            if kind == framing.TEXT:
                items.append({"text_hex": hexlify(value).decode()})
            elif kind == framing.ERROR:
                items.append({"error": value.code})
            else:
                try:
                    msg = M.decode(value, keys.get)
                    again = M.encode(msg, keys[msg.device_id])
                    items.append({"message": msg.as_dict(), "reencoded": again == value})
                except ProtocolError as e:
                    items.append({"error": e.code})
        print(json.dumps({"name": v["name"], "items": items}))


run(json.load(open(argv()[1])))

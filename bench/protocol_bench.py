# protocol_bench.py: serial decoder throughput on CPython and on real MicroPython.
#
#   .venv/bin/python bench/protocol_bench.py
#
# Runs the same measurement twice, under CPython and under MicroPython 1.29
# (WebAssembly build on Node, via firmware/virtual/mprun.mjs), and prints for
# each: frames/s through framing.Decoder alone, frames/s for decoder + MAC
# check + field decode (what the bridge does per event), and the same-run
# baseline: bare HMAC-SHA256 computations/s over the same bytes, which is the
# cryptographic floor the full decode cannot beat. Ratios are what to compare
# across machines. It also prints the byte overhead of a rating.
import json
import sys
import time

from pingjia.protocol import framing
from pingjia.protocol import messages as M
from pingjia.protocol.auth import Signer

KEY = bytes(range(32))


def clock_us():
    if hasattr(time, "ticks_us"):
        return time.ticks_us()
    return time.perf_counter_ns() // 1000


def elapsed_us(t0):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(time.ticks_us(), t0)
    return time.perf_counter_ns() // 1000 - t0


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def measure(n, rounds):
    msg = M.Message(M.RATING, "KP-0001", 7, 1, stars=5, age_ms=120, token="C7K2M9QX", nth=1, dt_ms=0)
    raw = M.encode(msg, KEY)
    frame = framing.encode(raw)
    stream = frame * n
    chunk = 64  # a serial read returns small chunks
    signer = Signer(KEY)
    res = {"decoder": [], "decode_verify": [], "baseline_hmac": []}
    for _ in range(rounds):
        dec = framing.Decoder()
        t0 = clock_us()
        got = 0
        for i in range(0, len(stream), chunk):
            got += len(dec.feed(stream[i : i + chunk]))
        res["decoder"].append(n * 1e6 / elapsed_us(t0))
        assert got == n
        dec = framing.Decoder()
        t0 = clock_us()
        for i in range(0, len(stream), chunk):
            for kind, value in dec.feed(stream[i : i + chunk]):
                M.decode(value, signer)
        res["decode_verify"].append(n * 1e6 / elapsed_us(t0))
        body = raw[:-16]
        t0 = clock_us()
        for _ in range(n):
            signer.mac(body)
        res["baseline_hmac"].append(n * 1e6 / elapsed_us(t0))
    out = {}
    for k in res:
        out[k] = round(median(res[k]))
    out["rating_frame_bytes"] = len(frame)
    out["rating_payload_bytes"] = len(raw) - 4 - len("KP-0001") - 8 - 16  # fields after the envelope
    out["impl"] = sys.implementation.name
    return out


def report(r):
    print(
        "%-12s decoder %8d frames/s | decoder+MAC+decode %7d frames/s | baseline HMAC alone %7d/s | full decode = %.2f x HMAC rate"
        % (r["impl"], r["decoder"], r["decode_verify"], r["baseline_hmac"], r["decode_verify"] / r["baseline_hmac"])
    )


def main():
    if sys.implementation.name == "micropython":
        print(json.dumps(measure(2000, 5)))
        return
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cp = measure(20000, 5)
    out = subprocess.run(
        ["node", str(root / "firmware/virtual/mprun.mjs"), "--lib", str(root / "protocol"), str(Path(__file__).resolve())],
        capture_output=True, text=True, check=True,
    ).stdout
    mp = json.loads(out.strip().splitlines()[-1])
    n = cp["rating_frame_bytes"]
    print("rating frame: %d bytes = 7 framing (magic, length, CRC-32) + 28 envelope (ver, type, flags, id length, boot, seq, 16-byte MAC) + %d device id + %d payload"
          % (n, len("KP-0001"), cp["rating_payload_bytes"]))
    report(cp)
    report(mp)
    print("MicroPython/CPython decode ratio: %.3f" % (mp["decode_verify"] / cp["decode_verify"]))


if __name__ == "__main__":
    main()

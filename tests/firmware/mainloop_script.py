# The real main loop (firmware/run.py) on a FakeBoard with the real clock, CPython or MicroPython:
# boot from the config file, take a press, stop on Ctrl-C from the serial line. Prints RESULT lines.
import sys
import time

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

try:
    import fakeboard
except ImportError:
    from tests.firmware import fakeboard

from pingjia.firmware import run
from pingjia.protocol import framing, messages as M

MP = sys.implementation.name == "micropython"
KEY = bytes(range(32))


def _sleep(ms):
    return asyncio.sleep_ms(ms) if MP else asyncio.sleep(ms / 1000)


async def drive(root, config_text):
    with open(root + "pingjia_config.json", "w") as f:
        f.write(config_text)
    b = fakeboard.FakeBoard(root)
    b.now_ms = (lambda: time.ticks_ms()) if MP else (lambda: int(time.monotonic() * 1000))
    task = asyncio.create_task(run.main(b, root))
    await _sleep(200)
    leds_idle = b.led
    b.raw = 1 << 4  # 5 stars
    await _sleep(60)
    leds_pressed = b.led
    b.raw = 0
    await _sleep(200)
    b.inbuf.extend(b"\r\x03\x03")  # the flashing tool wants the REPL
    await _sleep(200)
    out = []
    for kind, v in framing.Decoder().feed(bytes(b.outbuf)):
        if kind == framing.FRAME:
            out.append(M.decode(v, KEY).name)
        else:
            out.append("text")
    print("RESULT frames", ",".join(out))
    print("RESULT leds", leds_idle, leds_pressed, b.led)
    print("RESULT feeds", b.feeds)
    print("RESULT done", task.done() if hasattr(task, "done") else "?")


def main(root):
    key = "".join("%02x" % x for x in KEY)
    good = '{"device_id": "KP-0001", "key": "%s", "transport": "serial"}' % key
    coro = drive(root, good)
    if hasattr(asyncio, "run"):
        asyncio.run(coro)
    else:
        asyncio.create_task(coro)


if __name__ == "__main__":
    if MP:
        import os

        try:
            os.mkdir("/tmp/ml")
        except OSError:
            pass
        main("/tmp/ml/")
    else:
        main(sys.argv[1])

# tests/virtual/board_app.py: a tiny app for the virtual board tests (copied to the board as /main.py): frames, keys->LEDs, echo, boot log, hang on request.
#
# At boot it appends "boot N cause C" to /boots.txt (a file the tests read after
# a power cut), then sends a HELLO and a LOG "boot N cause C" frame signed with
# KEY. Loop (asyncio, 5 ms): the LEDs mirror the keys; a new key press beeps and
# sends an UNSOLICITED frame; a text line "x\n" is echoed as a LOG frame
# "echo x"; the line "hang" spins without yielding (the watchdog must reset
# the board); a 0x03 byte (this app only receives text) ends the app with
# KeyboardInterrupt, as the real firmware does for 0x03 outside a frame.
import asyncio

import machine
from pingjia.firmware.boards import virtual
from pingjia.protocol import framing, messages

KEY = b"k" * 32
DEVICE = "VB-TEST"
board = virtual.make({"wdt_ms": 1500})


def count_boot():
    try:
        with open(board.fs_root + "boots.txt") as f:
            n = len(f.read().splitlines())
    except OSError:
        n = 0
    with open(board.fs_root + "boots.txt", "a") as f:
        f.write("boot %d cause %d\n" % (n + 1, machine.reset_cause()))
    return n + 1


BOOT = count_boot()


def send(mtype, seq=0, **fields):
    msg = messages.Message(mtype, DEVICE, BOOT, seq, **fields)
    board.write(framing.encode(messages.encode(msg, KEY)))


async def main():
    send(messages.HELLO, fw="vtest", board=board.name, caps=0)
    send(messages.LOG, level=1, text="boot %d cause %d" % (BOOT, machine.reset_cause()))
    line = b""
    prev = 0
    seq = 0
    while True:
        board.feed_wdt()
        data = board.read()
        if data:
            if 3 in data:
                raise KeyboardInterrupt
            line += data
            while b"\n" in line:
                cmd, line = line.split(b"\n", 1)
                cmd = cmd.strip()
                if cmd == b"hang":
                    while True:
                        pass
                send(messages.LOG, level=1, text="echo " + cmd.decode())
        k = board.keys()
        if k != prev:
            board.leds(k)
            for bit in range(5):
                if k & ~prev & (1 << bit):
                    seq += 1
                    board.beep(2000 + 100 * bit, 30)
                    send(messages.UNSOLICITED, seq, stars=bit + 1, age_ms=0)
            prev = k
        await asyncio.sleep_ms(5)


try:
    asyncio.run(main())
finally:
    board.stop()
    print("app stopped")

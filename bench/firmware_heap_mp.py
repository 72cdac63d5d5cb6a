# Runs ON MicroPython: heap cost (gc.mem_alloc after gc.collect) of each import, in boot order.
# Measured inside an asyncio task after a few short sleeps (see firmware_bench_mp.py: the
# WebAssembly port collects garbage only once JavaScript's event loop has run).
# Only what the firmware itself imports is imported (it takes binascii and os
# from the C modules, not the Python extensions this port freezes over them).
# Figures include the qstr pool: MicroPython grows it in blocks that double
# (here 80, 160 then 320 entries, ~7 B each), so the import that happens to
# need a new block is charged for all of it.
import asyncio
import gc

a = 0


async def m(tag):
    global a
    for _ in range(3):
        await asyncio.sleep_ms(5)
        gc.collect()
    b = gc.mem_alloc()
    if tag:
        print("IMPORT", tag, b - a)
    a = b


async def main():
    await m(None)
    import json, struct, hashlib, sys, random  # noqa: E401,F401
    await m("builtins(json,struct,hashlib,random)")
    await m("asyncio")  # already imported by this script: 0
    from pingjia.protocol import errors, auth, crc  # noqa: F401
    await m("protocol.errors+auth+crc")
    from pingjia.protocol import messages  # noqa: F401
    await m("protocol.messages")
    from pingjia.protocol import framing  # noqa: F401
    await m("protocol.framing")
    from pingjia.firmware import config  # noqa: F401
    await m("firmware.config")
    from pingjia.firmware import ui, keys  # noqa: F401
    await m("firmware.ui+keys")
    from pingjia.firmware import journal  # noqa: F401
    await m("firmware.journal")
    from pingjia.firmware import link  # noqa: F401
    await m("firmware.link")
    from pingjia.firmware import app  # noqa: F401
    await m("firmware.app")
    from pingjia.firmware import run  # noqa: F401
    await m("firmware.run")
    from pingjia.firmware import mqtt  # noqa: F401
    await m("firmware.mqtt(MQTT-keypads-only)")


asyncio.create_task(main())

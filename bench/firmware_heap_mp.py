# Runs ON MicroPython: heap cost (gc.mem_alloc after gc.collect) of each import, in boot order.
# Measured inside an asyncio task after a sleep (see firmware_bench_mp.py: the
# WebAssembly port collects garbage only once JavaScript's event loop has run).
import asyncio
import gc

a = 0


async def m(tag):
    global a
    await asyncio.sleep_ms(5)
    gc.collect()
    b = gc.mem_alloc()
    if tag:
        print("IMPORT", tag, b - a)
    a = b


async def main():
    await m(None)
    import json, struct, hashlib, os, sys, random  # noqa: E401,F401
    await m("builtins(json,struct,hashlib,os,random)")
    import binascii  # noqa: F401
    await m("binascii")
    await m("asyncio")  # already imported by this script: 0
    from pingjia.protocol import messages, framing, auth, topics  # noqa: F401
    await m("pingjia.protocol")
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


asyncio.create_task(main())

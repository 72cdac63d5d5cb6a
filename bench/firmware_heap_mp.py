# Runs ON MicroPython: heap cost (gc.mem_alloc after gc.collect) of each import, in boot order.
import gc

gc.collect()
a = gc.mem_alloc()


def m(tag):
    global a
    gc.collect()
    b = gc.mem_alloc()
    print("IMPORT", tag, b - a)
    a = b


import json, struct, hashlib, os, sys, random  # noqa: E401
m("builtins(json,struct,hashlib,os,random)")
import binascii  # noqa: E402
m("binascii")
import asyncio  # noqa: E402
m("asyncio")
from pingjia.protocol import messages, framing, auth, topics  # noqa: E402,F401
m("pingjia.protocol")
from pingjia.firmware import config  # noqa: E402,F401
m("firmware.config")
from pingjia.firmware import ui, keys  # noqa: E402,F401
m("firmware.ui+keys")
from pingjia.firmware import journal  # noqa: E402,F401
m("firmware.journal")
from pingjia.firmware import link  # noqa: E402,F401
m("firmware.link")
from pingjia.firmware import app  # noqa: E402,F401
m("firmware.app")
from pingjia.firmware import run  # noqa: E402,F401
m("firmware.run")

# pingjia.firmware.boards.virtual: the board layer for the virtual board (MicroPython on Node, firmware/virtual/vboard.mjs).
#
# The harness provides the `vboard` module (keys, LEDs, buzzer and console I/O
# through shared memory with the Node main thread) and `machine` (reset, WDT,
# unique_id). This module only adapts them to the board contract in
# docs/ARCHITECTURE.md / docs/FIRMWARE.md.
#
# Serial: read()/write() are the board's console (the pty), like stdin/stdout on
# an RP2040. make() turns the keyboard interrupt off, as a real board module
# does with micropython.kbd_intr(-1), so 0x03 inside a binary frame is data; the
# firmware itself treats 0x03 outside a frame as "drop to the REPL". read()
# never returns bytes past a 0x03, so what a host sends after it (mpremote's
# Ctrl-A) is left for the REPL once the app has ended. stop() turns the
# keyboard interrupt back on.
# fs_root is "/": the flash is the root filesystem, as on a keypad.
import time

import machine
import vboard


class VirtualBoard:
    name = "virtual"
    fs_root = "/"
    def __init__(self, cfg):
        self.cfg = cfg
        get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: d)
        # Reason keys (bits 5..; the side channel presses them as keys 6..): none
        # unless the config says so, like the host board.
        self.reason_keys = get("reason_keys", 0)
        self._wdt_ms = get("wdt_ms", 8000)
        self._wdt = None
        vboard.kbd_intr(-1)
        vboard.leds(0)

    # -- inputs and outputs ----------------------------------------------------------------
    def keys(self):
        return vboard.keys()

    def leds(self, mask):
        vboard.leds(mask)

    def beep(self, freq_hz, ms):
        vboard.beep(freq_hz, ms)

    def now_ms(self):
        return time.ticks_ms()

    # -- serial console ---------------------------------------------------------------------
    def read(self):
        return vboard.read()

    def write(self, data):
        vboard.write(data)

    # -- system ------------------------------------------------------------------------------
    def feed_wdt(self):
        # The first feed starts the watchdog (8 s, the RP2040's longest), so a
        # board that hangs before its loop runs is not reset during boot.
        if self._wdt is None:
            self._wdt = machine.WDT(timeout=self._wdt_ms)
        self._wdt.feed()

    def reset(self):
        machine.reset()

    def mem_free(self):
        import gc

        return gc.mem_free()

    def stop(self):
        vboard.kbd_intr(3)


def make(cfg):
    return VirtualBoard(cfg)

# pingjia.firmware.run: boot (config -> board -> journal -> link -> App) and the asyncio main loop.
#
# start() is what /main.py calls. The loop steps the App every _PERIOD_MS,
# feeds the watchdog and yields to asyncio, so it also runs on the WebAssembly
# virtual board (whose asyncio lives on the JavaScript event loop: there is no
# asyncio.run there, so start() schedules the task and returns). A Ctrl-C from
# the flashing tool (0x03 outside a frame, or the REPL's own interrupt) ends
# the loop: LEDs off, journal closed, board.stop() (restores kbd_intr), REPL.
import sys
import time

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from .app import App
from .journal import Journal
from .link import SerialLink

_PERIOD_MS = const(10)  # main loop period: a press shows on the LEDs within one
_E_JOURNAL = const(8)  # LED blink code: the journal's filesystem failed


def board_module(name):
    """The board module for a board name ('esp32', 'rp2', 'virtual', 'host')."""
    if name == "esp32":
        from .boards import esp32 as m
    elif name == "rp2":
        from .boards import rp2 as m
    elif name in ("webassembly", "virtual"):
        from .boards import virtual as m
    else:
        from .boards import host as m
    return m


def load_config(root):
    """config.load(), then drop the config module: it is needed only at boot
    (a CONFIG command imports it again), and its code would stay in RAM."""
    from . import config

    try:
        return config.load(root)
    finally:
        del config
        sys.modules.pop(__name__.rpartition(".")[0] + ".config", None)
        pkg = sys.modules.get(__name__.rpartition(".")[0])
        if pkg is not None and "config" in pkg.__dict__:
            delattr(pkg, "config")


def build(board, cfg, err, now):
    """The App for a board and a loaded config (an App in error mode if unusable)."""
    link = None
    if not err:
        try:
            journal = Journal(board.fs_root, now, cap=cfg["journal_cap"], sync=getattr(board, "fsync", None))
        except Exception as e:
            err = (_E_JOURNAL, "journal: %s %s" % (e.__class__.__name__, e))
    if err:
        # keep the serial line read (Ctrl-C, signed STATUS with the reason)
        return App(board, cfg, SerialLink(board), None, err, now)
    if cfg["transport"] == "mqtt":
        from .mqtt import MqttLink  # only MQTT keypads load this code

        link = MqttLink(board, cfg)
    else:
        link = SerialLink(board)
    return App(board, cfg, link, journal, None, now)


class Clock:
    """Milliseconds since boot that never wrap, from a wrapping ticks_ms()."""

    def __init__(self, ticks):
        self.ticks = ticks
        self._diff = getattr(time, "ticks_diff", None) or (lambda a, b: a - b)
        self._last = ticks()
        self.t = 0

    def __call__(self):
        r = self.ticks()
        self.t += self._diff(r, self._last)
        self._last = r
        return self.t


async def main(board=None, root="/", period_ms=_PERIOD_MS):
    """Boot and run the keypad until Ctrl-C. Returns the App (for tests)."""
    cfg, err = load_config(root)
    if err:
        print("pingjia: config error %d: %s" % err)
    if board is None:
        board = board_module(cfg.get("board") or sys.platform).make(cfg)
    clock = Clock(board.now_ms)
    app = build(board, cfg, err, clock())
    sleep_ms = getattr(asyncio, "sleep_ms", None)
    try:
        while True:
            app.step(clock())
            board.feed_wdt()
            if sleep_ms:
                await sleep_ms(period_ms)
            else:  # CPython asyncio
                await asyncio.sleep(period_ms / 1000)
    except KeyboardInterrupt:
        print("pingjia: stopped (Ctrl-C)")
    finally:
        app.stop()
        stop = getattr(board, "stop", None)
        if stop:
            stop()
    return app


def start(board=None, root="/"):
    """Entry point for /main.py."""
    if hasattr(asyncio, "run"):
        try:
            return asyncio.run(main(board, root))
        except KeyboardInterrupt:  # Ctrl-C while not inside the loop body
            print("pingjia: stopped")
    else:  # WebAssembly: the JavaScript event loop runs the task
        return asyncio.create_task(main(board, root))

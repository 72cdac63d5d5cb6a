// prelude.mjs: Python run in every fresh MicroPython instance of the virtual board before boot.py (mounts, machine, vboard, asyncio.run).
//
// It talks to the worker through the JS module `_vbjs` (see vboard_worker.mjs)
// and installs two importable namespaces in sys.modules:
//   machine  reset(), soft_reset(), reset_cause(), unique_id(), freq(), idle(),
//            WDT(timeout=ms).feed(), and the *_RESET constants
//   vboard   the board's I/O for firmware/boards/virtual.py: keys(), leds(mask),
//            beep(freq, ms), read(), write(data), feed_wdt(), kbd_intr(char)
// and gives asyncio the blocking asyncio.run() a board has (missing in this
// port, whose asyncio runs on JS timers), time.sleep* that really sleep, and
// time.time/localtime from an unset RTC (2021-01-01 at boot), as on a keypad.
// The worker writes it to MEMFS /vbprelude.py and imports it, so its names stay
// out of the REPL's globals.
export const PRELUDE = String.raw`
import sys, os, vfs, time, asyncio, binascii, _vbjs

# Emscripten's libc numbers errors the WASI way (ENOENT = 44), but this port's
# errno module and mpremote expect the usual numbers (ENOENT = 2): translate.
_ERRNO = {44: 2, 20: 17, 31: 21, 54: 20, 55: 39, 2: 13, 8: 9, 28: 22, 51: 28, 29: 5,
          63: 1, 10: 16, 75: 18, 37: 36, 69: 30, 33: 24, 22: 27, 43: 19, 52: 38}


def _fix(fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise OSError(_ERRNO.get(e.errno, e.errno))


class FlashVfs:
    # The board's flash as a user VFS: delegates to VfsPosix over MEMFS /flash
    # (mirrored to the host directory, see flashfs.mjs) and fixes errno values.
    def __init__(self, root):
        self.v = vfs.VfsPosix(root)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return _fix(self.v.open, path, mode)

    def ilistdir(self, path):
        return _fix(self.v.ilistdir, path)

    def stat(self, path):
        return _fix(self.v.stat, path)

    def statvfs(self, path):
        return _fix(self.v.statvfs, path)

    def mkdir(self, path):
        return _fix(self.v.mkdir, path)

    def rmdir(self, path):
        return _fix(self.v.rmdir, path)

    def remove(self, path):
        return _fix(self.v.remove, path)

    def rename(self, old, new):
        return _fix(self.v.rename, old, new)

    def chdir(self, path):
        return _fix(self.v.chdir, path)

    def getcwd(self):
        return self.v.getcwd()


# The flash becomes the root filesystem.
vfs.umount('/')
vfs.mount(FlashVfs('/flash'), '/')
os.chdir('/')
if '/lib' not in sys.path:
    sys.path.append('/lib')


class machine:
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5

    @staticmethod
    def reset():
        _vbjs.reset('hard')  # never returns: the harness ends this instance

    @staticmethod
    def soft_reset():
        _vbjs.reset('soft')

    @staticmethod
    def reset_cause():
        return _vbjs.reset_cause()

    @staticmethod
    def unique_id():
        return binascii.unhexlify(_vbjs.uid())

    @staticmethod
    def freq(*args):
        return 125000000

    @staticmethod
    def idle():
        pass

    class WDT:
        # Like the hardware one: cannot be stopped; the harness resets the board
        # when feed() is not called within timeout ms.
        def __init__(self, id=0, timeout=5000):
            _vbjs.wdt_start(timeout)

        def feed(self):
            _vbjs.wdt_feed()


class vboard:
    @staticmethod
    def keys():
        return _vbjs.keys()

    @staticmethod
    def leds(mask):
        _vbjs.leds(mask)

    @staticmethod
    def beep(freq, ms):
        _vbjs.beep(freq, ms)

    @staticmethod
    def feed_wdt():
        _vbjs.wdt_feed()

    @staticmethod
    def kbd_intr(ch):
        # Same meaning as micropython.kbd_intr: -1 lets 0x03 through to read().
        _vbjs.kbd_intr(ch)

    @staticmethod
    def read():
        h = _vbjs.read()
        return binascii.unhexlify(h) if h else None

    @staticmethod
    def write(data):
        # Binary-safe (sys.stdout here turns "\n" into "\r\n" like a UART console).
        _vbjs.write(binascii.hexlify(data).decode())
        return len(data)

    @staticmethod
    def run_file(path):
        # Run boot.py / main.py like a board does; an exception is printed, not raised.
        try:
            f = open(path)
        except OSError:
            return
        with f:
            src = f.read()
        try:
            exec(src, {'__name__': '__main__'})
        except BaseException as e:
            sys.print_exception(e)


# ---- asyncio: a blocking asyncio.run() --------------------------------------------------
# This port's asyncio schedules its run loop with JS setTimeout and has no run().
# Here the worker thread may block (the Node main thread owns the pty and the
# side channel), so asyncio.run() is the ordinary blocking one: it drives the
# port's own scheduler (_run_iter) and sleeps between steps with Atomics.wait
# (no CPU burnt; new serial input wakes it early). Ctrl-C with kbd_intr on
# raises KeyboardInterrupt from the loop, as on a board.
from asyncio import core as _core


class _Sched:
    due = None  # ms until the scheduler wants to run again (None: nothing timed)


def _schedule(dt=0):
    if _Sched.due is None or dt < _Sched.due:
        _Sched.due = dt


def _check_intr():
    if _vbjs.intr():
        raise KeyboardInterrupt


def _asyncio_run(coro):
    t = coro if isinstance(coro, _core.Task) else _core.create_task(coro)
    done = []
    t.state = lambda task, er: done.append(er)  # called by _run_iter when t ends
    while not done:
        _Sched.due = None
        _core._run_iter()
        _check_intr()
        if not done:
            _vbjs.sleep(50 if _Sched.due is None else _Sched.due)
            _check_intr()
    er = done[0]
    if isinstance(er, StopIteration):
        return er.value
    raise er


async def _forever():
    while True:
        await asyncio.sleep_ms(1000)


_core._schedule_run_iter = _schedule
_core.new_event_loop()  # its TaskQueue calls _schedule when a task is queued
_core.Loop.run_until_complete = _asyncio_run
_core.Loop.run_forever = lambda: _asyncio_run(_forever())


# time.sleep*: sleep with Atomics.wait (the port busy-waits) and honour Ctrl-C.
def _sleep_ms(ms):
    end = time.ticks_add(time.ticks_ms(), int(ms))
    while True:
        left = time.ticks_diff(end, time.ticks_ms())
        _check_intr()
        if left <= 0:
            return
        _vbjs.sleep(left)


time.sleep_ms = _sleep_ms
time.sleep = lambda s: _sleep_ms(s * 1000)


# time.time*/localtime/gmtime: the board's unset RTC (2021-01-01 at boot), not the host clock.
_rtc_s = _vbjs.rtc_s
_gmtime = time.gmtime
time.time = lambda: _rtc_s()
time.time_ns = lambda: _rtc_s() * 1000000000
time.gmtime = lambda secs=None: _gmtime(_rtc_s() if secs is None else secs)
time.localtime = time.gmtime


asyncio.run = _asyncio_run
sys.modules['machine'] = machine
sys.modules['vboard'] = vboard
del sys.modules['vbprelude']  # keep machine/vboard only
`;

# pingjia.firmware.ui: what the LEDs show for each keypad state (pure: app state + time -> mask).
#
# LED bits: 0-4 star LEDs (1..5), 5 green "ok", 6 red "error/attention", 7 blue "link".
# One pattern wins, in this order:
#   config error   red blinks the error code (n blinks, pause), nothing else
#   identify       all LEDs blink together (IDENTIFY command), 4 Hz
#   maintenance    (hold 1+5 for 5 s) star LEDs 1-4 show the last digit of the
#                  device id in binary, green on, blue = link up, red = journal full
#   full signal    a press was refused because the journal is full: red flickers 2 s
#   not now        a press with no open prompt: red + the pressed star, 1 s
#   reason choice  after 1-2 stars: the chosen stars + red blinking (reason keys),
#                  or, when reasons are chosen with the star keys, all stars blink
#   thank you      the chosen stars + green, thanks_ms after each press
#   prompted       a light runs along the five stars: "please rate"
#   idle           dark; red steady while the journal is full
# Blue (link) is added to all but the first three: steady when the bridge is
# reachable, a short blink every 2 s when offline.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


GREEN = const(0x20)
RED = const(0x40)
BLUE = const(0x80)
_ALL_STARS = const(0x1F)

# transient signals (app.signal)
NOT_NOW = const(1)
FULL = const(2)


def stars_mask(n):
    return (1 << n) - 1 if n > 0 else 0


def _blink(now, period, on):
    return now % period < on


def leds(app, now):
    """The LED mask the keypad should show at `now`."""
    if app.err:
        # n blinks of 200 ms on / 200 ms off, then 1.2 s dark
        code = app.err[0]
        t = now % (code * 400 + 1200)
        return RED if t < code * 400 and t % 400 < 200 else 0
    if now < app.identify_until:
        return (_ALL_STARS | GREEN | RED | BLUE) if _blink(now, 250, 125) else 0
    if now < app.maint_until:
        d = app.dev[-1]
        m = (ord(d) - 48) & 0x0F if "0" <= d <= "9" else 0x0F
        return m | GREEN | (BLUE if app.online else 0) | (RED if app.journal.full else 0)
    link = BLUE if app.online or _blink(now, 2000, 100) else 0
    if now < app.signal_until:
        if app.signal == FULL:
            return (RED if _blink(now, 200, 100) else 0) | link
        return RED | app.signal_stars | link
    if app.reason_until and app.reason_from <= now < app.reason_until:
        red = RED if _blink(now, 1000, 500) else 0
        if app.reason_stars:
            return (_ALL_STARS if _blink(now, 1000, 500) else 0) | red | link
        return stars_mask(app.last_stars) | red | link
    if now < app.thanks_until:
        return stars_mask(app.last_stars) | GREEN | link
    if app.token:
        return (1 << ((now // 150) % 5)) | link
    return (RED if app.journal.full else 0) | link

# pingjia.firmware.keys: leading-edge key debounce and the maintenance combination (hold 1+5).
#
# Leading edge: a key counts as pressed the moment its raw bit goes high while
# it was released, so the first press after a long idle is never lost or
# delayed. Contact bounce is then ignored for `lock_ms` in both directions.
# A press that starts while another star key is held is a chord, not a rating:
# it is ignored (only hall IT press two keys, for the maintenance combination).
# Holding keys 1 and 5 (bits 0 and 4) for `combo_ms` fires the combination once.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


STARS = const(0x1F)  # bits 0..4
_COMBO = const(0x11)  # 1 star + 5 stars
_NKEYS = const(10)  # 5 star keys + up to 5 reason keys


class Keys:
    def __init__(self, lock_ms=40, combo_ms=5000):
        self.lock_ms = lock_ms
        self.combo_ms = combo_ms
        self.state = 0  # debounced mask
        self._lock = [0] * _NKEYS  # per key: ignore raw changes until this time
        self._combo_t = None  # when the combination started being held
        self._combo_done = False

    def poll(self, now, raw):
        """Feed the raw mask; returns (new presses mask, combination fired)."""
        new = 0
        for i in range(_NKEYS):
            bit = 1 << i
            if now < self._lock[i]:
                continue
            down = raw & bit
            if down and not self.state & bit:
                if not (bit & STARS and self.state & STARS):  # not a chord
                    new |= bit
                self.state |= bit
                self._lock[i] = now + self.lock_ms
            elif not down and self.state & bit:
                self.state &= ~bit
                self._lock[i] = now + self.lock_ms
        fired = False
        if self.state & STARS == _COMBO:
            if self._combo_t is None:
                self._combo_t = now
            elif not self._combo_done and now - self._combo_t >= self.combo_ms:
                self._combo_done = fired = True
        else:
            self._combo_t = None
            self._combo_done = False
        return new, fired

// vbshared.mjs: the shared-memory layout between the virtual board's main thread (vboard.mjs) and its MicroPython worker.
//
// One SharedArrayBuffer lives as long as the board process: a small Int32 control
// block followed by the serial receive ring. It outlives each MicroPython instance
// (every reset starts a new worker on the same buffer), so key state and bytes
// that arrived during a soft reset carry over the way they would on hardware.

export const CTRL_WORDS = 16;
// Control words (Int32 indexes). Written by the side named in brackets.
export const C_KEYS = 0;      // [main]   raw key bitmask injected through the side channel
export const C_LEDS = 1;      // [worker] current LED mask
export const C_BEEP_F = 2;    // [worker] last beep frequency (Hz, 0 = silence)
export const C_BEEP_MS = 3;   // [worker] last beep duration (ms)
export const C_BEEP_N = 4;    // [worker] number of beep() calls since power-on
export const C_WDT_MS = 5;    // [worker] watchdog timeout in ms, 0 = not started
export const C_WDT_FEED = 6;  // [worker] feed counter (the main thread watches it change)
export const C_KBD = 7;       // [worker] keyboard-interrupt char (3 = Ctrl-C, -1 = disabled)
export const C_HEAD = 8;      // [main]   ring write index (monotonic, wraps at 2^32)
export const C_TAIL = 9;      // [worker] ring read index
export const C_RX_DROP = 10;  // [main]   bytes dropped because the ring was full (UART overrun)
export const C_WAKE = 11;     // [main]   bumped + notified on new input: ends the worker's idle sleep early
export const C_INTR = 12;     // [main]   1 = Ctrl-C arrived while the app (or REPL code) ran with kbd_intr on (worker clears)
export const C_KEY_READS = 13; // [worker] keys() calls so far (a tap lasts until the app has seen it)
export const C_BUSY = 14;     // [worker] 1 while REPL input runs as code (Ctrl-C then interrupts it)

export const RING = 1 << 16;  // receive ring size in bytes (power of two)

export function makeShared() {
  const sab = new SharedArrayBuffer(CTRL_WORDS * 4 + RING);
  return sab;
}

export function views(sab) {
  return { ctrl: new Int32Array(sab, 0, CTRL_WORDS), ring: new Uint8Array(sab, CTRL_WORDS * 4, RING) };
}

// Append bytes to the ring (single producer: the main thread). Returns bytes dropped.
export function ringWrite(v, bytes) {
  const head = Atomics.load(v.ctrl, C_HEAD), tail = Atomics.load(v.ctrl, C_TAIL);
  const free = RING - ((head - tail) | 0);
  const n = Math.min(free, bytes.length);
  for (let i = 0; i < n; i++) v.ring[(head + i) & (RING - 1)] = bytes[i];
  Atomics.store(v.ctrl, C_HEAD, (head + n) | 0);
  return bytes.length - n;
}

// Take up to `max` bytes from the ring (single consumer: the current worker).
// With `stopAt` >= 0 the read ends just after the first byte equal to it, so a
// Ctrl-C that ends the app leaves what followed it for the REPL.
export function ringRead(v, max, stopAt = -1) {
  const head = Atomics.load(v.ctrl, C_HEAD), tail = Atomics.load(v.ctrl, C_TAIL);
  let n = Math.min((head - tail) | 0, max);
  if (n <= 0) return null;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = v.ring[(tail + i) & (RING - 1)];
    if (out[i] === stopAt) { n = i + 1; break; }
  }
  Atomics.store(v.ctrl, C_TAIL, (tail + n) | 0);
  return n === out.length ? out : out.slice(0, n);
}

export function ringClear(v) {
  Atomics.store(v.ctrl, C_TAIL, Atomics.load(v.ctrl, C_HEAD));
}

// vboard_worker.mjs: one boot of the virtual board: a fresh MicroPython instance in a worker thread (boot.py, main.py, REPL).
//
// The main thread (vboard.mjs) starts one worker per power-on/reset and
// terminates it to reset, so every boot gets a new heap like real hardware and
// a hung app (even `while True: pass`) can be killed by the watchdog.
//
// workerData: { sab, flashDir, cause: 'power'|'hard'|'soft'|'wdt', raw: bool, heap, uid }
// Messages to the main thread:
//   {t:'out', data: Uint8Array}     console bytes for the pty, in order
//   {t:'mode', mode}                'boot' | 'app' | 'repl' | 'raw'
//   {t:'leds', mask} {t:'beep', freq, ms}
//   {t:'reset', kind: 'hard'|'soft', raw}   please end me and boot again
// Messages from the main thread:
//   {t:'rx'}         new bytes in the ring (the REPL drains it; the app reads it itself)
// Ctrl-C for the app comes through shared memory (C_INTR), since a running app
// blocks this thread and does not see messages.
import { parentPort, workerData } from "node:worker_threads";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import { mountFlash } from "./flashfs.mjs";
import { PRELUDE } from "./prelude.mjs";
import * as S from "./vbshared.mjs";

const { sab, flashDir, cause, raw: startRaw, heap, uid } = workerData;
const v = S.views(sab);
const CAUSES = { power: 1, hard: 2, wdt: 3, soft: 5 };
const RAW_BANNER = "raw REPL; CTRL-B to exit\r\n";
const PASTE_WINDOW = 128;  // raw-paste flow-control window (bytes)
const RTC_EPOCH_MS = Date.UTC(2021, 0, 1);
const BOOT_AT = Date.now();

// ---- console output: batched into 'out' messages --------------------------------
let outBuf = new Uint8Array(4096), outLen = 0, flushQueued = false, lastFlush = Date.now();
function flush() {
  flushQueued = false;
  lastFlush = Date.now();
  if (!outLen) return;
  parentPort.postMessage({ t: "out", data: outBuf.slice(0, outLen) });
  outLen = 0;
}
function emit(bytes) {
  if (outLen + bytes.length > outBuf.length) {
    const n = new Uint8Array(Math.max(outBuf.length * 2, outLen + bytes.length));
    n.set(outBuf.subarray(0, outLen));
    outBuf = n;
  }
  outBuf.set(bytes, outLen);
  outLen += bytes.length;
  // Flush soon; also flush from inside long synchronous Python runs (no event loop turn).
  if (outLen >= 4096 || Date.now() - lastFlush > 10) flush();
  else if (!flushQueued) { flushQueued = true; setImmediate(flush); }
}
// MicroPython's own output (print, REPL, tracebacks) is "cooked" like a UART
// console: a "\n" not preceded by "\r" goes out as "\r\n". Binary data from the
// app takes the raw path (vboard.write -> bridge.write).
let lastOut = 0;
function cooked(bytes) {
  for (const c of bytes) {
    if (c === 10 && lastOut !== 13) emit(CRLF);
    else emit1(c);
    lastOut = c;
  }
}
const CRLF = Uint8Array.of(13, 10);
const one = new Uint8Array(1);
const emit1 = (c) => { one[0] = c; emit(one); };
const enc = new TextEncoder();
const say = (s) => emit(enc.encode(s));

let mode = "boot";
function setMode(m) {
  mode = m;
  flush();
  parentPort.postMessage({ t: "mode", mode: m });
}

// ---- ending this instance ------------------------------------------------------------
const block = new Int32Array(new SharedArrayBuffer(4));
function requestReset(kind, raw = false) {
  flush();
  mode = "dead";
  parentPort.postMessage({ t: "reset", kind, raw });
}
// machine.reset() must not return: ask for the reset, then sleep until terminated.
function resetAndHalt(kind) {
  requestReset(kind, false);
  for (;;) Atomics.wait(block, 0, 0);
}

// ---- the JS module the prelude imports as _vbjs ----------------------------------
const bridge = {
  keys: () => { Atomics.add(v.ctrl, S.C_KEY_READS, 1); return Atomics.load(v.ctrl, S.C_KEYS); },
  leds: (mask) => {
    mask &= 0xffff;
    if (Atomics.exchange(v.ctrl, S.C_LEDS, mask) !== mask) parentPort.postMessage({ t: "leds", mask });
  },
  beep: (freq, ms) => {
    Atomics.store(v.ctrl, S.C_BEEP_F, freq | 0);
    Atomics.store(v.ctrl, S.C_BEEP_MS, ms | 0);
    Atomics.add(v.ctrl, S.C_BEEP_N, 1);
    parentPort.postMessage({ t: "beep", freq: freq | 0, ms: ms | 0 });
  },
  wdt_start: (ms) => { Atomics.store(v.ctrl, S.C_WDT_MS, Math.max(1, ms | 0)); Atomics.add(v.ctrl, S.C_WDT_FEED, 1); },
  wdt_feed: () => { Atomics.add(v.ctrl, S.C_WDT_FEED, 1); if (Date.now() - lastFlush > 10) flush(); },
  kbd_intr: (ch) => { Atomics.store(v.ctrl, S.C_KBD, ch | 0); },
  // Serial bytes as hex (a str crosses the JS/Python boundary cheaply); null when none.
  read: () => {
    if (Date.now() - lastFlush > 10) flush();
    const stop = Atomics.load(v.ctrl, S.C_KBD) === -1 ? 3 : -1;
    const b = S.ringRead(v, 512, stop);
    return b ? Buffer.from(b).toString("hex") : null;
  },
  write: (hex) => { emit(Buffer.from(hex, "hex")); lastOut = 0; },
  // Idle sleep for asyncio.run / time.sleep: blocks this thread; new input wakes it.
  sleep: (ms) => {
    flush();
    const seen = Atomics.load(v.ctrl, S.C_WAKE);
    if (ms > 0) Atomics.wait(v.ctrl, S.C_WAKE, seen, Math.min(ms, 1000));
  },
  intr: () => Atomics.exchange(v.ctrl, S.C_INTR, 0) === 1,
  reset: (kind) => resetAndHalt(kind === "soft" ? "soft" : "hard"),
  reset_cause: () => CAUSES[cause] || 1,
  // The RTC: nobody sets it on a keypad, so like an RP2040 after power-on it
  // counts from 2021-01-01 00:00:00 at boot (the firmware must not trust it).
  // Whole seconds: JS integers reach Python as int32.
  rtc_s: () => Math.floor((RTC_EPOCH_MS + Date.now() - BOOT_AT) / 1000),
  uid: () => uid,
};

// ---- REPL ---------------------------------------------------------------------------
// Friendly REPL: MicroPython's own event-driven REPL (replProcessChar), except
// Ctrl-A, which enters the raw REPL implemented here (with raw-paste), because
// the event-driven C raw REPL has no raw-paste and would swallow mpremote's
// raw-paste request into the code buffer.
let line = [];        // raw REPL: bytes of the command being received
let pasteReq = 0;     // raw REPL: progress through "\x05A\x01" (raw-paste request)
let paste = null;     // raw-paste state: { got } while receiving

// Run REPL input as code with C_BUSY set, so a Ctrl-C from the host interrupts
// it (in time.sleep* or asyncio.run) instead of waiting in the ring.
function busy(fn) {
  Atomics.store(v.ctrl, S.C_BUSY, 1);
  try { return fn(); } finally { Atomics.store(v.ctrl, S.C_BUSY, 0); Atomics.store(v.ctrl, S.C_INTR, 0); }
}

function exec(codeBytes) {
  // Output of the code goes out as it is printed; then EOF, the traceback, EOF.
  let err = "";
  const code = new TextDecoder().decode(new Uint8Array(codeBytes));
  try {
    busy(() => mp.runPython(code));
  } catch (e) {
    if (e.name !== "PythonError") throw e;
    if (e.type === "SystemExit") { say("\x04\x04"); requestReset("soft", true); return; }
    err = e.message.replace(/\r?\n/g, "\r\n");
  }
  if (mode === "dead") return;
  say("\x04" + err + "\x04>");
}

function rawByte(c) {
  if (paste) {
    if (c === 4) {                        // end of raw-paste data
      const code = line; line = []; paste = null;
      say("\x04");
      exec(code);
      return;
    }
    line.push(c);
    if (++paste.got % PASTE_WINDOW === 0) say("\x01");  // grant the next window
    return;
  }
  if (pasteReq === 1 && c === 0x41) { pasteReq = 2; return; }
  if (pasteReq === 2 && c === 1) {
    pasteReq = 0;
    paste = { got: 0 };
    emit(Uint8Array.of(0x52, 1, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8));  // "R\x01" + window (u16 LE)
    return;
  }
  if (pasteReq) {                         // not a raw-paste request after all: plain bytes
    line.push(5);
    if (pasteReq === 2) line.push(0x41);
    pasteReq = 0;
  }
  if (c === 1) { line = []; say(RAW_BANNER + ">"); }
  else if (c === 2) { line = []; setMode("repl"); say("\r\n"); mp.replInit(); }
  else if (c === 3) { line = []; }
  else if (c === 4) {
    if (line.length === 0) { say("OK\r\n"); requestReset("soft", true); return; }
    const code = line; line = [];
    say("OK");
    exec(code);
  } else if (c === 5 && line.length === 0) { pasteReq = 1; }
  else line.push(c);
}

function friendlyByte(c) {
  if (c === 1) { line = []; pasteReq = 0; setMode("raw"); say("\r\n" + RAW_BANNER + ">"); return; }
  if (busy(() => mp.replProcessChar(c))) requestReset("soft", false);  // Ctrl-D at an empty prompt, or SystemExit
}

function drain() {
  while (mode === "repl" || mode === "raw") {
    const b = S.ringRead(v, 1);
    if (!b) break;
    if (mode === "raw") rawByte(b[0]);
    else friendlyByte(b[0]);
  }
  flush();
}

// ---- boot --------------------------------------------------------------------------
const mp = await loadMicroPython({
  heapsize: heap,
  linebuffer: false,
  stdout: cooked,
  stderr: cooked,
});
mountFlash(mp.FS, flashDir);
mp.registerJsModule("_vbjs", bridge);
mp.FS.writeFile("/vbprelude.py", PRELUDE);
mp.runPython("__import__('vbprelude')");
// Calls into the prelude's vboard namespace (run as code: keeps __main__ clean).
const py = (call) => mp.runPython(`__import__('vboard').${call}`);
parentPort.on("message", (m) => {
  if (m.t === "rx") drain();
});

if (cause === "soft") say("MPY: soft reboot\r\n");
py("run_file('boot.py')");
if (!startRaw) {
  // A real board runs main.py only when the soft reset came from the friendly REPL.
  // main.py's asyncio.run() blocks this thread until the app ends (see prelude.mjs).
  setMode("app");
  py("run_file('main.py')");
}
if (mode !== "dead") {
  if (startRaw) { say(RAW_BANNER + ">"); setMode("raw"); }
  else { mp.replInit(); setMode("repl"); }
  drain();
}


// vboard.mjs: the virtual keypad board: real MicroPython (WebAssembly) with its console on stdin/stdout (a pty) and a JSON side channel.
//
//   node firmware/virtual/vboard.mjs --flash DIR --ctl SOCKET [--heap BYTES] [--uid HEX]
//
// stdin/stdout are the board's USB serial console: tools/vboard.py passes the
// master side of a pseudo-terminal, so the slave (/dev/pts/N) behaves like
// /dev/ttyACM0 of a MicroPython board: friendly REPL, raw REPL with raw-paste
// (mpremote), soft reset (Ctrl-D), and the app's binary frames.
// DIR is the board's flash (see flashfs.mjs): it keeps every file written, across
// resets and `kill -9` of this process (a power cut).
//
// Boot, like a real board: boot.py, then main.py; asyncio.run(main()) blocks as
// on a board (the worker thread sleeps with Atomics.wait between steps); when
// main.py ends (exception, Ctrl-C, return) the friendly REPL appears. Each boot
// is a fresh MicroPython instance in a worker thread (vboard_worker.mjs); a
// reset ends it. The watchdog lives here, in the main thread.
//
// Side channel: a Unix stream socket at SOCKET speaking JSON lines. Each request
// is one object with "op"; each gets one reply line {"ok": true, ...} or
// {"ok": false, "error": "..."}:
//   {"op":"state"}                    -> the state below
//   {"op":"keys","mask":N}            set the whole raw key bitmask
//   {"op":"press","key":K}            key K down (K = 1..5 stars -> bit K-1; 6.. reason keys)
//   {"op":"release","key":K}          key K up
//   {"op":"tap","key":K,"ms":M}       down now, up after M ms (timed here) once the app has read keys() twice
//   {"op":"reset","cause":"hard"}     reset the board (cause hard|soft|wdt|power)
// State: {"ok":true, "mode": "boot"|"app"|"repl"|"raw", "keys", "leds", "beep":
//   {"freq","ms","count"}, "boots", "cause" (of the last boot), "wdt_ms",
//   "kbd_intr", "led_log": [[t_ms, mask], ...last 64], "beep_log": [[t_ms, freq, ms], ...],
//   "key_log": [[t_ms, keys], ...] (changes made through this channel),
//   "rx_dropped", "tx_dropped", "uptime_ms"}. t_ms counts from process start.
// When the socket is listening the process prints "vboard ready" on stderr.
import { Worker } from "node:worker_threads";
import fs from "node:fs";
import net from "node:net";
import crypto from "node:crypto";
import path from "node:path";
import * as S from "./vbshared.mjs";

// ---- options ---------------------------------------------------------------------------
const opts = { heap: 512 * 1024 };
const argv = process.argv.slice(2);
while (argv.length) {
  const o = argv.shift();
  if (o === "--flash") opts.flash = path.resolve(argv.shift());
  else if (o === "--ctl") opts.ctl = argv.shift();
  else if (o === "--heap") opts.heap = Number(argv.shift());
  else if (o === "--uid") opts.uid = argv.shift();
  else { console.error(`vboard: unknown option ${o}`); process.exit(2); }
}
if (!opts.flash || !opts.ctl) { console.error("usage: vboard.mjs --flash DIR --ctl SOCKET [--heap BYTES] [--uid HEX]"); process.exit(2); }
fs.mkdirSync(opts.flash, { recursive: true });
// A stable unique_id per flash directory unless given (8 bytes, like an RP2040's flash id).
opts.uid ||= crypto.createHash("sha256").update(opts.flash).digest("hex").slice(0, 16);

const T0 = Date.now();
const now = () => Date.now() - T0;
const sab = S.makeShared();
const v = S.views(sab);
Atomics.store(v.ctrl, S.C_KBD, 3);

const st = { mode: "boot", boots: 0, cause: "power", ledLog: [], beepLog: [], keyLog: [], txDropped: 0 };
// Key changes go through here so key_log shares led_log's clock (press -> LED latency).
function setKeys(op) {
  const before = Atomics.load(v.ctrl, S.C_KEYS);
  op();
  const after = Atomics.load(v.ctrl, S.C_KEYS);
  if (after !== before) { st.keyLog.push([now(), after]); trim(st.keyLog); }
}

// ---- console output: an ordered queue written to fd 1 off the event loop ------------------
// Bounded like a USB CDC buffer: while nobody reads the pty, the oldest output
// beyond TX_CAP is dropped, so a host that opens the port later sees recent
// output rather than a backlog from long ago.
const TX_CAP = 64 * 1024;
let txQueue = [], txBytes = 0, txBusy = false;
function txPush(data) {
  txQueue.push(data);
  txBytes += data.length;
  // Drop whole old chunks, never the one being written (index 0 while busy).
  while (txBytes > TX_CAP && txQueue.length > (txBusy ? 2 : 1)) {
    const [old] = txQueue.splice(txBusy ? 1 : 0, 1);
    txBytes -= old.length;
    st.txDropped += old.length;
  }
  if (!txBusy) txNext();
}
function txNext() {
  const data = txQueue[0];
  if (!data) { txBusy = false; return; }
  txBusy = true;
  fs.write(1, data, 0, data.length, null, (err, n) => {
    if (err) {
      if (err.code === "EAGAIN") { setTimeout(txNext, 5); return; }
      process.exit(0);  // the pty is gone: the board is unplugged
    }
    if (n < data.length) txQueue[0] = data.subarray(n);
    else txQueue.shift();
    txBytes -= n;
    txNext();
  });
}

// ---- console input: pty -> ring (or Ctrl-C -> interrupt) -----------------------------------
let hold = null;  // bytes after an interrupting Ctrl-C: kept until the interrupt has been taken
function rxBytes(bytes) {
  if (hold) { hold.push(bytes); return; }
  const kbd = Atomics.load(v.ctrl, S.C_KBD);
  for (let i = 0; i < bytes.length; i++) {
    const running = st.mode === "app" || Atomics.load(v.ctrl, S.C_BUSY) === 1;
    if (running && kbd >= 0 && bytes[i] === kbd) {
      // As on a board with kbd_intr enabled: Ctrl-C raises KeyboardInterrupt in
      // the app (or in code the REPL runs) and is not data; what follows waits
      // until it has been taken.
      ringPush(bytes.subarray(0, i));
      hold = [bytes.subarray(i + 1)];
      Atomics.store(v.ctrl, S.C_INTR, 1);
      wake();
      return;
    }
  }
  ringPush(bytes);
}
function ringPush(bytes) {
  if (!bytes.length) return;
  const dropped = S.ringWrite(v, bytes);
  if (dropped) Atomics.add(v.ctrl, S.C_RX_DROP, dropped);
  wake();
  worker?.postMessage({ t: "rx" });
}
// End the worker's idle sleep (asyncio.run / time.sleep) so it sees input at once.
function wake() {
  Atomics.add(v.ctrl, S.C_WAKE, 1);
  Atomics.notify(v.ctrl, S.C_WAKE);
}
function releaseHold() {
  const h = hold;
  hold = null;
  if (h) for (const b of h) rxBytes(b);
}
const rxBuf = Buffer.alloc(4096);
function rxNext() {
  fs.read(0, rxBuf, 0, rxBuf.length, null, (err, n) => {
    if (err) {
      if (err.code === "EAGAIN") { setTimeout(rxNext, 5); return; }
      process.exit(0);
    }
    if (n === 0) { setTimeout(rxNext, 20); return; }  // EOF on a pty: nobody there yet
    rxBytes(Uint8Array.from(rxBuf.subarray(0, n)));
    rxNext();
  });
}

// ---- the MicroPython worker: one per boot ---------------------------------------------------
let worker = null, gen = 0, wdtSeen = 0, wdtAt = 0;
function boot(cause, raw = false) {
  const old = worker;
  worker = null;
  if (old) old.terminate();
  gen += 1;
  st.boots += 1;
  st.cause = cause;
  st.mode = "boot";
  hold = null;
  if (cause !== "soft") {
    // Power, hard and watchdog resets lose pending input, LEDs and the watchdog.
    S.ringClear(v);
    Atomics.store(v.ctrl, S.C_LEDS, 0);
    Atomics.store(v.ctrl, S.C_BEEP_F, 0);
    st.ledLog.push([now(), 0]);
  }
  // The watchdog stops at every reset, soft ones included, so mpremote (which
  // soft-resets on connect) can work on a board whose app ran a watchdog. It
  // keeps running while the REPL shows after the app ended. Real RP2040/ESP32
  // watchdogs survive a soft reset too; see docs/ARCHITECTURE.md.
  Atomics.store(v.ctrl, S.C_WDT_MS, 0);
  Atomics.store(v.ctrl, S.C_KBD, 3);
  Atomics.store(v.ctrl, S.C_INTR, 0);
  const me = gen;
  const w = new Worker(new URL("./vboard_worker.mjs", import.meta.url), {
    workerData: { sab, flashDir: opts.flash, cause, raw, heap: opts.heap, uid: opts.uid },
  });
  worker = w;
  w.on("message", (m) => {
    if (me !== gen) return;  // a message from an instance already reset
    if (m.t === "out") txPush(m.data);
    else if (m.t === "mode") {
      st.mode = m.mode;
      if (m.mode !== "app") { Atomics.store(v.ctrl, S.C_INTR, 0); releaseHold(); }
    }
    else if (m.t === "leds") { st.ledLog.push([now(), m.mask]); trim(st.ledLog); }
    else if (m.t === "beep") { st.beepLog.push([now(), m.freq, m.ms]); trim(st.beepLog); }
    else if (m.t === "reset") setImmediate(() => { if (me === gen) boot(m.kind, m.raw); });
  });
  w.on("error", (e) => {
    if (me !== gen) return;
    console.error("vboard: worker crashed:", e);
    txPush(Buffer.from(`\r\nvboard: MicroPython instance crashed (${e.message}); resetting\r\n`));
    setTimeout(() => { if (me === gen) boot("hard"); }, 1000);  // no tight crash loop
  });
}
const trim = (a) => { if (a.length > 64) a.splice(0, a.length - 64); };

// ---- watchdog ------------------------------------------------------------------------------
setInterval(() => {
  // The app took the Ctrl-C (it is unwinding, or caught it and goes on): what
  // followed the Ctrl-C goes to the ring, for the REPL or for the app.
  // Or nothing is running any more that could take it (it finished first).
  if (hold) {
    const idle = st.mode !== "app" && Atomics.load(v.ctrl, S.C_BUSY) === 0;
    if (Atomics.load(v.ctrl, S.C_INTR) === 0 || idle) { Atomics.store(v.ctrl, S.C_INTR, 0); releaseHold(); }
  }
  const ms = Atomics.load(v.ctrl, S.C_WDT_MS);
  const fed = Atomics.load(v.ctrl, S.C_WDT_FEED);
  if (!ms || fed !== wdtSeen) { wdtSeen = fed; wdtAt = Date.now(); return; }
  if (Date.now() - wdtAt > ms) {
    wdtAt = Date.now();
    boot("wdt");
  }
}, 10);

// ---- side channel ---------------------------------------------------------------------------
function keyBit(k) {
  k = Number(k);
  if (!Number.isInteger(k) || k < 1 || k > 30) throw new Error(`bad key ${k}`);
  return 1 << (k - 1);
}
function state() {
  return {
    mode: st.mode, keys: Atomics.load(v.ctrl, S.C_KEYS), leds: Atomics.load(v.ctrl, S.C_LEDS),
    beep: { freq: Atomics.load(v.ctrl, S.C_BEEP_F), ms: Atomics.load(v.ctrl, S.C_BEEP_MS), count: Atomics.load(v.ctrl, S.C_BEEP_N) },
    boots: st.boots, cause: st.cause, wdt_ms: Atomics.load(v.ctrl, S.C_WDT_MS), kbd_intr: Atomics.load(v.ctrl, S.C_KBD),
    led_log: st.ledLog, beep_log: st.beepLog, key_log: st.keyLog, rx_dropped: Atomics.load(v.ctrl, S.C_RX_DROP),
    tx_dropped: st.txDropped, uptime_ms: now(),
  };
}
function handle(req) {
  switch (req.op) {
    case "state": return state();
    case "keys": setKeys(() => Atomics.store(v.ctrl, S.C_KEYS, req.mask | 0)); return {};
    case "press": { const bit = keyBit(req.key); setKeys(() => Atomics.or(v.ctrl, S.C_KEYS, bit)); return {}; }
    case "release": { const bit = keyBit(req.key); setKeys(() => Atomics.and(v.ctrl, S.C_KEYS, ~bit)); return {}; }
    case "tap": {
      // Down now; up once `ms` have passed AND the app has read the keys twice
      // since, so a busy machine cannot make the app miss a tap.
      const bit = keyBit(req.key), ms = Math.max(1, req.ms | 0 || 80);
      const t0 = Date.now(), reads0 = Atomics.load(v.ctrl, S.C_KEY_READS);
      setKeys(() => Atomics.or(v.ctrl, S.C_KEYS, bit));
      const up = () => {
        if (Date.now() - t0 >= ms && ((Atomics.load(v.ctrl, S.C_KEY_READS) - reads0) | 0) >= 2) setKeys(() => Atomics.and(v.ctrl, S.C_KEYS, ~bit));
        else setTimeout(up, 5);
      };
      setTimeout(up, ms);
      return {};
    }
    case "reset": {
      const cause = ["hard", "soft", "wdt", "power"].includes(req.cause) ? req.cause : "hard";
      boot(cause);
      return {};
    }
    default: throw new Error(`unknown op ${req.op}`);
  }
}
try { fs.unlinkSync(opts.ctl); } catch { /* not there */ }
const server = net.createServer((sock) => {
  let buf = "";
  sock.setEncoding("utf8");
  sock.on("error", () => {});
  sock.on("data", (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!text.trim()) continue;
      let reply;
      try { reply = { ok: true, ...handle(JSON.parse(text)) }; }
      catch (e) { reply = { ok: false, error: String(e.message || e) }; }
      sock.write(JSON.stringify(reply) + "\n");
    }
  });
});
server.listen(opts.ctl, () => {
  boot("power");
  rxNext();
  console.error(`vboard ready ctl=${opts.ctl} flash=${opts.flash}`);
});
// The launcher (tools/vboard.py) holds the pty; if it dies without stopping us, stop too.
const PARENT = process.ppid;
setInterval(() => { if (process.ppid !== PARENT) process.exit(0); }, 500).unref();
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

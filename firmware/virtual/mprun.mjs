// mprun.mjs: run a Python script under real MicroPython (WebAssembly build) on Node.
//
//   node firmware/virtual/mprun.mjs [--lib DIR]... [--file HOST:DEVICE]... [--heap BYTES] SCRIPT.py [ARGS...]
//
// Each --lib DIR is copied into the in-memory filesystem under /lib/pingjia/<basename>
// the way the flashing tool lays the firmware out on a board, so `import
// pingjia.protocol` works unchanged. --file copies one host file to a device path.
// The script's stdout goes to stdout; ARGS are in the module `mprun_args`
// (ARGV, a list: MicroPython's sys.argv can't be set from here). Exit code 1 on an
// uncaught Python exception (its traceback goes to stderr).
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";

const args = process.argv.slice(2);
const libs = [], files = [];
let heap = 2 * 1024 * 1024;
while (args.length && args[0].startsWith("--")) {
  const opt = args.shift();
  if (opt === "--lib") libs.push(args.shift());
  else if (opt === "--file") files.push(args.shift());
  else if (opt === "--heap") heap = Number(args.shift());
  else { console.error(`mprun: unknown option ${opt}`); process.exit(2); }
}
const script = args.shift();
if (!script) { console.error("usage: mprun.mjs [--lib DIR] [--file HOST:DEV] SCRIPT.py [ARGS]"); process.exit(2); }

const out = [];
const mp = await loadMicroPython({
  heapsize: heap,
  linebuffer: false,
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
});

function mkdirs(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}
function copyTree(src, dst) {
  mkdirs(dst);
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name === "node_modules") continue;
    const s = path.join(src, ent.name), d = dst + "/" + ent.name;
    if (ent.isDirectory()) copyTree(s, d);
    else if (/\.(py|mpy|json|bin)$/.test(ent.name)) mp.FS.writeFile(d, fs.readFileSync(s));
  }
}
mkdirs("/lib/pingjia");
mp.FS.writeFile("/lib/pingjia/__init__.py", "");
for (const lib of libs) copyTree(lib, "/lib/pingjia/" + path.basename(path.resolve(lib)));
for (const spec of files) {
  const [host, dev] = spec.split(":");
  mkdirs(path.posix.dirname(dev));
  mp.FS.writeFile(dev, fs.readFileSync(host));
}
mp.FS.writeFile("/__main__.py", fs.readFileSync(script));
const argv = JSON.stringify([script, ...args]);
try {
  mp.FS.writeFile("/lib/mprun_args.py", `ARGV = ${argv}\n`);
  mp.runPython(`import sys\nsys.path.insert(0, '/lib')\n`);
  mp.runPython(fs.readFileSync(script, "utf8"));
} catch (e) {
  process.stderr.write(String(e.message || e) + "\n");
  process.exit(1);
}

// firmware_romfs.mjs: run a script under MicroPython 1.29 (WebAssembly) with a ROMFS image mounted at /rom.
//
//   node bench/firmware_romfs.mjs IMAGE.romfs SCRIPT.py
// ROMFS is how MicroPython boards (1.25+) run .mpy in place from flash: the
// bytecode is not copied into the heap. /rom/lib is on sys.path, so an image
// holding lib/pingjia/... imports as on a keypad. Used by bench/firmware_bench.py.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";

const [image, script] = process.argv.slice(2);
const romfs = new Uint8Array(fs.readFileSync(image));
const mp = await loadMicroPython({
  heapsize: 2 * 1024 * 1024, romfs, linebuffer: false,
  stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s),
});
try {
  mp.runPython(fs.readFileSync(script, "utf8"));
} catch (e) {
  process.stderr.write(String(e.message || e) + "\n");
  process.exit(1);
}

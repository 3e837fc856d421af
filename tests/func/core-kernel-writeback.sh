#!/bin/bash
# core-kernel-writeback.sh: -o kernel-cache=writeback (FUSE's writeback
# cache): buffered writes are kept by the kernel, and still every byte
# acknowledged by fsync(2) survives a kill -9 of the daemon; close(2)
# writes and flushes; msync(2) of a shared mapping reaches the server;
# O_DIRECT goes straight through; a write past the end of the disk fails
# at fsync at the latest; a bad value is refused.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "SKIP: python3 not installed" >&2; exit 77; }

pattern "$TMP/disk.img" 16
cp "$TMP/disk.img" "$TMP/old.img"
nbdkit_unix d file "$TMP/disk.img"
echo "d nbd+unix:///?socket=$(nbdkit_sock d)" > "$TMP/t.tab"

mkdir -p "$TMP/bad"
"$ND" "$TMP/t.tab" "$TMP/bad" -f -o kernel-cache=sometimes 2>"$TMP/bad.err" &&
    fail "kernel-cache=sometimes was taken"
grep -q "kernel-cache=sometimes: must be writeback or writethrough" "$TMP/bad.err" ||
    { cat "$TMP/bad.err"; fail "no clear refusal of a bad kernel-cache="; }

nd_mount "$TMP/t.tab" "$TMP/m" -o kernel-cache=writeback

# Round 1: 512 random pages, buffered, then fsync: acknowledged. Round 2:
# 512 other pages, no fsync. Then the daemon is killed (-9).
cat > "$TMP/w.py" <<'EOF2'
import os, random, sys
mnt, exp = sys.argv[1], sys.argv[2]
rng = random.Random(9)
pages = rng.sample(range(4096), 1024)
fd = os.open(mnt, os.O_RDWR)
out = os.open(exp, os.O_RDWR)
for p in pages[:512]:
    data = os.urandom(4096)
    assert os.pwrite(fd, data, p * 4096) == 4096
    os.pwrite(out, data, p * 4096)
os.fsync(fd)
with open(exp + ".later", "w") as f:
    for p in pages[512:]:
        data = os.urandom(4096)
        assert os.pwrite(fd, data, p * 4096) == 4096
        f.write("%d %s\n" % (p, data.hex()))
print("written")
sys.stdout.flush()
os.kill(int(sys.argv[3]), 9)
EOF2
cp "$TMP/old.img" "$TMP/expect.img"
"$PY" "$TMP/w.py" "$TMP/m/d" "$TMP/expect.img" "$(cat "$TMP/m.pid")" || fail "the writer"
wait_for 10 sh -c "! kill -0 $(cat "$TMP/m.pid")" || fail "the daemon survived kill -9"
fusermount3 -u -z "$TMP/m" 2>/dev/null
# Every fsync'ed page is on the server; a later page is its old or its
# new bytes, never anything else.
"$PY" - "$TMP/disk.img" "$TMP/expect.img" "$TMP/old.img" <<'EOF2' || fail "after kill -9 the server lost acknowledged bytes"
import sys
srv = open(sys.argv[1], "rb").read()
exp = bytearray(open(sys.argv[2], "rb").read())
old = open(sys.argv[3], "rb").read()
later = {}
for line in open(sys.argv[2] + ".later"):
    p, h = line.split()
    later[int(p)] = bytes.fromhex(h)
bad = 0
for p in range(4096):
    s = srv[p * 4096:(p + 1) * 4096]
    if p in later:
        ok = s in (later[p], old[p * 4096:(p + 1) * 4096])
    else:
        ok = s == exp[p * 4096:(p + 1) * 4096]
    bad += not ok
landed = sum(srv[p * 4096:(p + 1) * 4096] == later[p] for p in later)
print("fsync'ed pages intact; %d of %d unsynced pages had landed" % (landed, len(later)))
sys.exit(1 if bad else 0)
EOF2

# Close without fsync: the bytes are on the server when close returns.
# A shared mapping's msync too; O_DIRECT at once.
cp "$TMP/disk.img" "$TMP/expect.img"
nd_mount "$TMP/t.tab" "$TMP/m" -o kernel-cache=writeback
"$PY" - "$TMP/m/d" "$TMP/expect.img" "$TMP/disk.img" <<'EOF2' || fail "close / msync / O_DIRECT semantics"
import mmap, os, sys
mnt, exp, srv = sys.argv[1:4]
def server(off, n):
    with open(srv, "rb") as f:
        f.seek(off)
        return f.read(n)
a = os.urandom(12288)
fd = os.open(mnt, os.O_WRONLY)
os.pwrite(fd, a, 5 * 65536 + 100)
os.close(fd)
assert server(5 * 65536 + 100, len(a)) == a, "close did not write the kernel's pages"
fd = os.open(mnt, os.O_RDWR)
m = mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, offset=2 << 20)
b = os.urandom(8192)
m[4096:4096 + 8192] = b
m.flush()
assert server((2 << 20) + 4096, 8192) == b, "msync did not reach the server"
m.close()
c = mmap.mmap(-1, 4096)
c[:] = os.urandom(4096)
dfd = os.open(mnt, os.O_RDWR | os.O_DIRECT)
os.pwrite(dfd, c, 7 << 20)
assert server(7 << 20, 4096) == bytes(c), "an O_DIRECT write was held"
os.close(dfd)
# Past the end: refused now, or at fsync at the latest; the size stays.
try:
    os.pwrite(fd, b"x" * 4096, 16 << 20)
    os.fsync(fd)
    sys.exit("a write past the end was acknowledged by fsync")
except OSError as e:
    print("past the end: %s" % e.strerror)
os.close(fd)
with open(exp, "r+b") as f:
    for off, d in ((5 * 65536 + 100, a), ((2 << 20) + 4096, b), (7 << 20, bytes(c))):
        f.seek(off); f.write(d)
EOF2
# (The kernel keeps the size it extended: the disk's 16 MiB are compared.)
cmp -n $((16 << 20)) "$TMP/m/d" "$TMP/expect.img" || fail "the mount reads other bytes"
nd_unmount "$TMP/m"
cmp "$TMP/disk.img" "$TMP/expect.img" || fail "the server's file differs after unmount"
echo "ok: fsync'ed bytes survive kill -9; close, msync, O_DIRECT and the end of the disk keep their meaning"

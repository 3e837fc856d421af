#!/bin/bash
# cache-writeback-pages.sh: with cache=writeback, 4 KiB O_DIRECT writes of
# whole pages read nothing from the server (the block's other pages are
# not fetched first); a read of a block mixing written pages and old data
# fills only what is missing without overwriting the written pages; after
# fsync and after unmount the server's file holds exactly the writes. A
# write of part of a page still reads what it needs and lands right.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "SKIP: python3 not installed" >&2; exit 77; }

pattern "$TMP/disk.img" 16
cp "$TMP/disk.img" "$TMP/expect.img"
NBDLOG=$TMP/requests.log
nbdkit_unix d --filter=log file "$TMP/disk.img" logfile="$NBDLOG"
echo "d nbd+unix:///?socket=$(nbdkit_sock d) cache=writeback" > "$TMP/t.tab"
nd_mount "$TMP/t.tab" "$TMP/m"

# Bytes the server was asked to read so far.
read_bytes() {
    local n=0 c
    for c in $(grep -o ' Read id=[0-9]* offset=0x[0-9a-f]* count=0x[0-9a-f]*' "$NBDLOG" |
               sed 's/.*count=//'); do
        n=$((n + c))
    done
    echo $n
}

# 1024 random pages of the 4096 (about a quarter: most blocks mix
# written pages and old data), O_DIRECT through the mount, the same
# bytes into the oracle. MODE=partial: 100-byte writes inside pages.
cat > "$TMP/w.py" <<'EOF2'
import mmap, os, random, sys
mnt, exp, mode = sys.argv[1], sys.argv[2], sys.argv[3]
rng = random.Random(20)
pages = rng.sample(range(4096), 1024 if mode == "pages" else 64)
fd = os.open(mnt, os.O_RDWR | (os.O_DIRECT if mode == "pages" else 0))
ofd = os.open(exp, os.O_RDWR)
buf = mmap.mmap(-1, 4096)
for p in pages:
    data = os.urandom(4096)
    if mode == "pages":
        buf[:] = data
        assert os.pwrite(fd, buf, p * 4096) == 4096
        os.pwrite(ofd, data, p * 4096)
    else:
        off = p * 4096 + rng.randrange(3996)
        os.pwrite(fd, data[:100], off)
        os.pwrite(ofd, data[:100], off)
os.close(fd)
os.close(ofd)
EOF2
before=$(read_bytes)
"$PY" "$TMP/w.py" "$TMP/m/d" "$TMP/expect.img" pages || { show_log "$TMP/m.log"; fail "the page writes"; }
fetched=$(( $(read_bytes) - before ))
echo "4 MiB of 4 KiB O_DIRECT page writes read $fetched bytes from the server"
[ "$fetched" -eq 0 ] || fail "whole-page writes read $fetched bytes from the server (want 0)"

# Before any write-back: the mount merges the written pages with the
# server's old bytes.
cmp "$TMP/m/d" "$TMP/expect.img" || fail "the mount reads other bytes than written + old"
"$PY" "$TMP/w.py" "$TMP/m/d" "$TMP/expect.img" partial || fail "the partial-page writes"
cmp "$TMP/m/d" "$TMP/expect.img" || fail "the mount reads other bytes after partial-page writes"
"$PY" -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$TMP/m/d" ||
    fail "fsync"
cmp "$TMP/disk.img" "$TMP/expect.img" || fail "after fsync the server's file differs"

# Pages written, then written back, then a block filled by a read: the
# server's file and the mount agree after an unmount too.
"$PY" "$TMP/w.py" "$TMP/m/d" "$TMP/expect.img" pages || fail "the second page writes"
nd_unmount "$TMP/m"
cmp "$TMP/disk.img" "$TMP/expect.img" || fail "after unmount the server's file differs"
echo "ok: page writes fetched 0 bytes; fsync and unmount left the server's file right"

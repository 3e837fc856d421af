#!/bin/bash
# cache-writeback-verify.sh: cache=writeback under a cache so small that
# write-backs run while writers go on: two writers rewrite the same pages
# (whole pages O_DIRECT, runs of pages, parts of pages) while fsyncs and
# background write-backs take them. A page written again during its
# write-back must stay dirty and reach the server later. Every write is
# kept in an oracle; the mount reads back the oracle, and after a last
# fsync and kill -9 of the daemon the server's file is the oracle. Then
# fio --verify over a fresh mount of the same entry.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "SKIP: python3 not installed" >&2; exit 77; }
requires fio

pattern "$TMP/disk.img" 16
cp "$TMP/disk.img" "$TMP/expect.img"
nbdkit_unix d file "$TMP/disk.img"
echo "d nbd+unix:///?socket=$(nbdkit_sock d) cache=writeback,cache-size=2M" >"$TMP/t.tab"
nd_mount "$TMP/t.tab" "$TMP/m"

# Two writers on the two halves of the first 8 MiB (pages rewritten many
# times), an fsync every 300 writes, the same bytes into the oracle.
cat >"$TMP/w.py" <<'EOF2'
import mmap, os, random, sys, threading
mnt, exp = sys.argv[1], sys.argv[2]
dfd = os.open(mnt, os.O_RDWR | os.O_DIRECT)
bfd = os.open(mnt, os.O_RDWR)
ofd = os.open(exp, os.O_RDWR)
errors = []

def writer(seed, base):
    rng = random.Random(seed)
    buf = mmap.mmap(-1, 4 << 16)
    try:
        for i in range(3000):
            kind = rng.randrange(4)
            if kind < 2:   # whole pages, O_DIRECT
                n = 1 if kind == 0 else rng.randrange(2, 33)
                off = base + rng.randrange(1024 - n) * 4096
                data = os.urandom(n * 4096)
                buf[:len(data)] = data
                assert os.pwritev(dfd, [memoryview(buf)[:len(data)]], off) == len(data)
            else:          # part of a page, or across two
                off = base + rng.randrange((4 << 20) - 9000)
                data = os.urandom(rng.randrange(1, 9000))
                assert os.pwrite(bfd, data, off) == len(data)
            os.pwrite(ofd, data, off)
            if i % 300 == 299:
                os.fsync(bfd)
    except Exception as e:
        errors.append(repr(e))

ts = [threading.Thread(target=writer, args=(s, b)) for s, b in ((1, 0), (2, 4 << 20))]
for t in ts: t.start()
for t in ts: t.join()
os.fsync(bfd)
sys.exit("writer: " + errors[0] if errors else 0)
EOF2
"$PY" "$TMP/w.py" "$TMP/m/d" "$TMP/expect.img" || { show_log "$TMP/m.log"; fail "the writers failed"; }
cmp "$TMP/m/d" "$TMP/expect.img" || fail "the mount does not read back what was written"
pid=$(cat "$TMP/m.pid")
kill -9 "$pid"
wait_for 10 sh -c "! kill -0 $pid" || fail "daemon $pid survived kill -9"
fusermount3 -u "$TMP/m" 2>/dev/null || umount -l "$TMP/m"
cmp "$TMP/disk.img" "$TMP/expect.img" || fail "after fsync and kill -9 the server's file differs from what was written"
echo "ok: rewritten pages survived write-backs running beside the writers"

nd_mount "$TMP/t.tab" "$TMP/m"
fio --name=v --filename="$TMP/m/d" --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
    --size=16m --verify=crc32c --do_verify=1 --verify_state_save=0 --randrepeat=0 --output="$TMP/fio.out" >/dev/null 2>&1 ||
    { cat "$TMP/fio.out"; show_log "$TMP/m.log"; fail "fio --verify failed"; }
nd_unmount "$TMP/m"
echo "ok: fio --verify over cache=writeback"

#!/bin/bash
# Server errors reach the caller as the server's errno and the daemon
# survives: nbdkit's error filter fails reads with EIO and writes with
# ENOSPC while a trigger file exists; other reads and writes succeed.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 16
cp "$TMP/disk.img" "$TMP/expect"
nbdkit_unix e --filter=error file "$TMP/disk.img" \
    error-pread=EIO error-pread-rate=100% error-pread-file="$TMP/fail-reads" \
    error-pwrite=ENOSPC error-pwrite-rate=100% error-pwrite-file="$TMP/fail-writes"
echo "e nbd+unix:///?socket=$(nbdkit_sock e)  readahead=0" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"
F=$TMP/mnt/e
rd() { dd if="$F" of="$TMP/out" bs=64k count=1 skip="$1" iflag=direct status=none; }

rd 0 || fail "first read failed"
touch "$TMP/fail-reads"
if rd 160 2>"$TMP/rd.err"; then fail "a read the server failed succeeded"; fi
grep -q "Input/output error" "$TMP/rd.err" || { cat "$TMP/rd.err"; fail "the failed read is not EIO"; }
echo "ok: read fails: $(cat "$TMP/rd.err")"
if rd 200 2>/dev/null; then fail "a second failing read succeeded"; fi
rm "$TMP/fail-reads"
rd 160 || { show_log "$TMP/mnt.log"; fail "the read fails after the server recovered"; }
cmp "$TMP/out" <(dd if="$TMP/disk.img" bs=64k count=1 skip=160 status=none) || fail "read after the errors differs"
echo "ok: reads work again"

touch "$TMP/fail-writes"
if dd if=/dev/zero of="$F" bs=64k count=1 seek=32 oflag=direct conv=notrunc status=none 2>"$TMP/wr.err"; then
    fail "a write the server failed succeeded"
fi
grep -q "No space left on device" "$TMP/wr.err" || { cat "$TMP/wr.err"; fail "the failed write is not ENOSPC"; }
echo "ok: write fails: $(cat "$TMP/wr.err")"
rm "$TMP/fail-writes"
dd if=/dev/zero of="$F" bs=64k count=1 seek=32 oflag=direct conv=notrunc,fsync status=none ||
    fail "the write fails after the server recovered"
dd if=/dev/zero of="$TMP/expect" bs=64k count=1 seek=32 conv=notrunc status=none
cmp "$TMP/disk.img" "$TMP/expect" || fail "backing file differs"
cmp "$F" "$TMP/expect" || fail "the mount reads other bytes"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
echo "ok: daemon alive, bytes right"
nd_unmount "$TMP/mnt"

#!/bin/bash
# Writes through the mount reach the server: a second client (nbdcopy)
# and the backing file read back the same bytes; fsync reaches the
# server's FLUSH; punch hole and zero range become TRIM / WRITE_ZEROES,
# or plain writes of zeroes when the server has no WRITE_ZEROES.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
requires nbdcopy

pattern "$TMP/disk.img" 8
cp "$TMP/disk.img" "$TMP/expect"
NBDLOG=$TMP/requests.log
nbdkit_unix w --filter=log file "$TMP/disk.img" logfile="$NBDLOG"
S=$(nbdkit_sock w)
echo "w nbd+unix:///?socket=$S" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"

# 2 MiB of new data at 1 MiB, then fsync.
pattern "$TMP/new" 2
dd if="$TMP/new" of="$TMP/expect" bs=64k seek=16 conv=notrunc status=none
dd if="$TMP/new" of="$TMP/mnt/w" bs=64k seek=16 conv=notrunc,fsync status=none ||
    { show_log "$TMP/mnt.log"; fail "write through the mount failed"; }
grep -q " Flush " "$NBDLOG" || { show_log "$NBDLOG"; fail "fsync did not reach the server's flush"; }
grep -q " Write " "$NBDLOG" || { show_log "$NBDLOG"; fail "no NBD write reached the server"; }
cmp "$TMP/disk.img" "$TMP/expect" || fail "backing file differs after the write"
nbdcopy "nbd+unix:///?socket=$S" "$TMP/back" || fail "nbdcopy failed"
cmp "$TMP/back" "$TMP/expect" || fail "second client reads other bytes"
cmp "$TMP/mnt/w" "$TMP/expect" || fail "the mount reads other bytes"
echo "ok: write + fsync reached the server"

# A small unaligned write in the middle of a block.
printf 'netdiskfs' | dd of="$TMP/mnt/w" bs=1 seek=100003 conv=notrunc,fsync status=none ||
    fail "unaligned write failed"
printf 'netdiskfs' | dd of="$TMP/expect" bs=1 seek=100003 conv=notrunc status=none
cmp "$TMP/disk.img" "$TMP/expect" || fail "backing file differs after the unaligned write"
echo "ok: unaligned write"

# Punch hole -> TRIM (or WRITE_ZEROES that may trim); zero range ->
# WRITE_ZEROES. Both must read back as zeroes everywhere.
if fallocate -p -o $((4 << 20)) -l $((1 << 20)) "$TMP/mnt/w" 2>"$TMP/fa.err"; then
    grep -Eq " (Trim|Zero) " "$NBDLOG" || { show_log "$NBDLOG"; fail "punch hole sent neither TRIM nor WRITE_ZEROES"; }
    dd if=/dev/zero of="$TMP/expect" bs=64k seek=64 count=16 conv=notrunc status=none
    zeroes=$(grep -c " Zero " "$NBDLOG")
    fallocate -z -o $((6 << 20)) -l $((512 << 10)) "$TMP/mnt/w" || fail "zero range failed"
    dd if=/dev/zero of="$TMP/expect" bs=64k seek=96 count=8 conv=notrunc status=none
    [ "$(grep -c " Zero " "$NBDLOG")" -gt "$zeroes" ] || { show_log "$NBDLOG"; fail "zero range sent no WRITE_ZEROES"; }
    sync "$TMP/mnt/w"
    nbdcopy "nbd+unix:///?socket=$S" "$TMP/back2" || fail "nbdcopy failed"
    cmp "$TMP/back2" "$TMP/expect" || fail "holes do not read back as zeroes (second client)"
    cmp "$TMP/mnt/w" "$TMP/expect" || fail "holes do not read back as zeroes (mount)"
    echo "ok: punch hole and zero range"
else
    cat "$TMP/fa.err"
    fail "fallocate punch hole on the mount failed"
fi
nd_unmount "$TMP/mnt"

# Without WRITE_ZEROES (nbdkit's nozero filter) a zero range is emulated
# with plain writes of zeroes.
pattern "$TMP/nz.img" 2
cp "$TMP/nz.img" "$TMP/nz.expect"
nbdkit_unix nz --filter=log --filter=nozero file "$TMP/nz.img" logfile="$TMP/nz.log" zeromode=none
echo "nz nbd+unix:///?socket=$(nbdkit_sock nz)" > "$TMP/tab2"
nd_mount "$TMP/tab2" "$TMP/mnt2"
fallocate -z -o $((256 << 10)) -l $((128 << 10)) "$TMP/mnt2/nz" || fail "zero range without server support failed"
sync "$TMP/mnt2/nz"
dd if=/dev/zero of="$TMP/nz.expect" bs=64k seek=4 count=2 conv=notrunc status=none
cmp "$TMP/nz.img" "$TMP/nz.expect" || fail "emulated zero range: backing file differs"
grep -q " Zero " "$TMP/nz.log" && { show_log "$TMP/nz.log"; fail "WRITE_ZEROES sent to a server without it"; }
grep -q " Write " "$TMP/nz.log" || { show_log "$TMP/nz.log"; fail "no writes of zeroes reached the server"; }
echo "ok: zero range emulated with writes"
nd_unmount "$TMP/mnt2"

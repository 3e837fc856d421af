#!/bin/bash
# The server's block size constraints become the entry's limits: with a
# 4 KiB minimum and a 64 KiB maximum enforced by nbdkit (misfits fail with
# EINVAL), unaligned and large reads and writes through the mount still
# work, and the bytes match the backing file.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 8
cp "$TMP/disk.img" "$TMP/expect"
nbdkit_unix b --filter=blocksize-policy --filter=stats file "$TMP/disk.img" \
    blocksize-minimum=4K blocksize-maximum=64K blocksize-error-policy=error \
    statsfile="$TMP/stats"
echo "b nbd+unix:///?socket=$(nbdkit_sock b)  cache=none,block-size=256K" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"
F=$TMP/mnt/b

cmp "$F" "$TMP/expect" || { show_log "$TMP/mnt.log"; fail "reads differ"; }
dd if="$F" of="$TMP/odd" bs=1 skip=5001 count=3333 status=none || fail "unaligned read failed"
cmp "$TMP/odd" <(dd if="$TMP/expect" bs=1 skip=5001 count=3333 status=none) || fail "unaligned read differs"

printf 'netdiskfs-blocksize' | dd of="$F" bs=1 seek=10007 conv=notrunc,fsync status=none ||
    { show_log "$TMP/mnt.log"; fail "unaligned write failed"; }
printf 'netdiskfs-blocksize' | dd of="$TMP/expect" bs=1 seek=10007 conv=notrunc status=none
pattern "$TMP/new" 1
dd if="$TMP/new" of="$F" bs=1M seek=3 oflag=direct conv=notrunc,fsync status=none ||
    { show_log "$TMP/mnt.log"; fail "1 MiB write failed"; }
dd if="$TMP/new" of="$TMP/expect" bs=1M seek=3 conv=notrunc status=none
cmp "$TMP/disk.img" "$TMP/expect" || fail "backing file differs after the writes"
cmp "$F" "$TMP/expect" || fail "the mount reads other bytes after the writes"
echo "ok: unaligned and large I/O within a 4K..64K server"
nd_unmount "$TMP/mnt"
nbdkit_stop b
# Every request the server saw was 4K-aligned and at most 64K.
if grep -E "^ +(1[7-9]|[2-9][0-9]) bits:|^ +([0-9]|1[01]) bits:" "$TMP/stats"; then
    cat "$TMP/stats"; fail "requests outside 4K..64K reached the server"
fi
echo "ok: $(grep -m1 '^read:' "$TMP/stats")"

#!/bin/bash
# layer-qcow2-iscsi.sh: format=qcow2 over iSCSI LUNs (tgtd). Images made
# by qemu-img with data written by qemu-io (v2, v3 with zero clusters,
# deflate-compressed, 512-byte and 2 MiB clusters, on 512- and 4096-byte
# block LUNs) decode equal to `qemu-img convert -O raw` byte for byte;
# writes through the mount to a writable LUN (random pieces, fsync) leave
# an image `qemu-img check` finds clean and `qemu-img compare` finds equal
# to the expected bytes, and qemu-io reads back the byte patterns written
# through the mount; a zeroed range leaks only; a read-only LUN's image stays as it was.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"
. "$TOP/tests/lib/mount.sh"
requires qemu-img
requires qemu-io

q() { qemu-img "$@" >/dev/null || fail "qemu-img $*"; }
qio() { qemu-io -f qcow2 "$@" >/dev/null || fail "qemu-io $*"; }
W=(-c 'write -P 0x11 0 64k' -c 'write -P 0x22 1000k 300k' -c 'write -P 0x33 7M 1M' -c 'write -P 0x44 3071k 2k')
q create -f qcow2 -o compat=0.10 "$TMP/v2.qcow2" 8M; qio "${W[@]}" "$TMP/v2.qcow2"
q create -f qcow2 "$TMP/v3.qcow2" 8M; qio "${W[@]}" -c 'write -z 1M 64k' "$TMP/v3.qcow2"
q create -f qcow2 -o cluster_size=512 "$TMP/c512.qcow2" 8M; qio "${W[@]}" "$TMP/c512.qcow2"
q create -f qcow2 -o cluster_size=2M "$TMP/c2m.qcow2" 8M; qio "${W[@]}" "$TMP/c2m.qcow2"
(seq 1 300000; head -c 1M /dev/urandom) | head -c 4M > "$TMP/text.raw"
q convert -c -O qcow2 -f raw "$TMP/text.raw" "$TMP/zlib.qcow2"
q create -f qcow2 "$TMP/w.qcow2" 16M; qio -c 'write -P 0x55 2M 3M' "$TMP/w.qcow2"
for f in "$TMP"/*.qcow2; do
    q convert -O raw "$f" "$f.raw"
    # A LUN is whole blocks; the zeroes after the image are free space
    # (refcount 0), where the writable one allocates its new clusters.
    truncate -s $(( ($(stat -c %s "$f") + (1 << 20) - 1) >> 20 << 20 )) "$f"
done
truncate -s 32M "$TMP/w.qcow2"
cp "$TMP/v3.qcow2" "$TMP/v3.orig"

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs
tgtd_start "$P"
tgt_target "$P" 1 "$IQN:q"
tgt_lun "$P" 1 1 "$TMP/v2.qcow2"
tgt_lun "$P" 1 2 "$TMP/v3.qcow2" readonly
tgt_lun "$P" 1 3 "$TMP/c512.qcow2" --blocksize 4096
tgt_lun "$P" 1 4 "$TMP/c2m.qcow2"
tgt_lun "$P" 1 5 "$TMP/zlib.qcow2"
tgt_lun "$P" 1 6 "$TMP/w.qcow2"
U="iscsi://127.0.0.1:$P/$IQN:q"
cat > "$TMP/t.tab" <<TAB
v2    $U/1   format=qcow2,ro
v3    $U/2   format=qcow2
c512  $U/3   format=qcow2,ro
c2m   json:{"driver":"qcow2","file":{"driver":"iscsi","transport":"tcp","portal":"127.0.0.1:$P","target":"$IQN:q","lun":4}}
zlib  driver=qcow2,file.driver=iscsi,file.transport=tcp,file.portal=127.0.0.1:$P,file.target=$IQN:q,file.lun=5
w     $U/6   format=qcow2
TAB
nd_mount "$TMP/t.tab" "$TMP/m"
for x in v2 v3 c512 c2m zlib w; do
    [ "$(stat -c %s "$TMP/m/$x")" = "$(stat -c %s "$TMP/$x.qcow2.raw")" ] || fail "$x: not the virtual size"
    cmp "$TMP/m/$x" "$TMP/$x.qcow2.raw" || fail "$x: not the decoded disk"
    # The status file shows the virtual disk's size, the container's apart.
    [ "$(status_field "$TMP/m" "$x" size)" = "$(stat -c %s "$TMP/$x.qcow2.raw")" ] || fail "$x: status size is not the virtual size"
    [ "$(status_field "$TMP/m" "$x" disk_size)" = "$(stat -c %s "$TMP/$x.qcow2")" ] || fail "$x: status disk_size is not the container's"
done
[ "$(stat -c %a "$TMP/m/v3")" = 444 ] || fail "v3: a LUN the target write-protects must show read-only"

# Writes: random pieces with dd and fsync, then qemu-img is the judge.
cp "$TMP/w.qcow2.raw" "$TMP/w.expect"
for i in $(seq 1 40); do
    off=$(( (RANDOM * 37) % (16 * 1048576 - 70000) ))
    len=$(( 1 + RANDOM % 70000 ))
    head -c $len /dev/urandom > "$TMP/piece"
    dd if="$TMP/piece" of="$TMP/m/w" bs=$len seek=$off oflag=seek_bytes conv=notrunc,fsync status=none || fail "write $i"
    dd if="$TMP/piece" of="$TMP/w.expect" bs=$len seek=$off oflag=seek_bytes conv=notrunc status=none
done
# Byte patterns qemu-io reads back itself (read -P) after the unmount.
PAT=("0x61 123456 70000" "0x62 9437184 65536" "0x63 16707584 69632")
for p in "${PAT[@]}"; do
    set -- $p
    head -c "$3" /dev/zero | tr '\0' "\\$(printf '%03o' "$1")" > "$TMP/piece"
    dd if="$TMP/piece" of="$TMP/m/w" bs="$3" seek="$2" oflag=seek_bytes conv=notrunc,fsync status=none || fail "pattern $1"
    dd if="$TMP/piece" of="$TMP/w.expect" bs="$3" seek="$2" oflag=seek_bytes conv=notrunc status=none
done
cmp "$TMP/m/w" "$TMP/w.expect" || fail "w: reads back wrong"
nd_unmount "$TMP/m"
for p in "${PAT[@]}"; do
    set -- $p
    out=$(qemu-io -f qcow2 -c "read -P $1 $2 $3" "$TMP/w.qcow2" 2>&1) && [[ $out != *"verification failed"* ]] ||
        { echo "$out"; fail "qemu-io: pattern $1 at $2 does not read back"; }
done
judge() { # WHAT ACCEPTED-EXIT-CODES
    qemu-img check "$TMP/w.qcow2" > "$TMP/check.log" 2>&1; rc=$?
    [[ " $2 " == *" $rc "* ]] || { cat "$TMP/check.log"; fail "qemu-img check after $1: exit $rc"; }
    qemu-img compare -q -f qcow2 -F raw "$TMP/w.qcow2" "$TMP/w.expect" || fail "qemu-img compare after $1: the image differs"
}
judge "the writes" 0
# A punched hole becomes zero clusters; the clusters they held are leaked
# (qcow2-write.c's rule: a replaced cluster keeps its refcount), which
# qemu-img check reports as leaks (exit 3), never as corruption.
nd_mount "$TMP/t.tab" "$TMP/m"
fallocate -p -o 4M -l 256K "$TMP/m/w" || fail "punch a hole in w"
dd if=/dev/zero of="$TMP/w.expect" bs=256K seek=16 count=1 conv=notrunc status=none
cmp "$TMP/m/w" "$TMP/w.expect" || fail "w: reads back wrong after the punch"
nd_unmount "$TMP/m"
judge "the punch" "0 3"
cmp "$TMP/v3.qcow2" "$TMP/v3.orig" || fail "the read-only LUN's image changed"
echo "qcow2 over iSCSI: 5 variants decode as qemu-img does; writes on a LUN pass qemu-img check and compare"

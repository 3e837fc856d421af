#!/bin/bash
# layer-qcow2-grow.sh: a qcow2 image grows its container as the guest
# writes, over a local file (write-through and writeback caches) and SFTP (writes past the end extend the
# file): an image made with `qemu-img create -f qcow2 X 256M` (a container
# of about 200 KiB) takes 64 MiB of a pattern through the mount; after the
# unmount `qemu-img check` is clean and `qemu-img compare` finds the raw
# pattern. An image with 512-byte clusters and 64-bit refcounts takes 16
# MiB: its refcount table (one cluster, for 2 MiB of container) grows
# several times. An image with extended L2 entries over a backing file (a
# relative name, over SFTP too) takes random pieces and punched holes:
# subclusters allocated and zeroed, the rest of each cluster still read
# from the backing file; qemu-img check and compare judge it. Over NBD,
# whose export has a fixed size, a write that needs more room fails with
# ENOSPC and a message that says why.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/sshd.sh"
requires qemu-img

SRV=$TMP/srv
mkdir -p "$SRV"
for x in f w s n; do
    qemu-img create -q -f qcow2 "$SRV/$x.qcow2" 256M || fail "qemu-img create"
done
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 "$SRV/c.qcow2" 64M ||
    fail "qemu-img create c.qcow2"
rt_before=$(od -An -tu1 -j56 -N4 "$SRV/c.qcow2" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
head -c 32M /dev/urandom > "$SRV/base.raw"
qemu-img create -q -f qcow2 -o extended_l2=on -b base.raw -F raw "$SRV/e.qcow2" || fail "qemu-img create extl2"
cp "$SRV/base.raw" "$TMP/e.expect"
start_size=$(stat -c %s "$SRV/f.qcow2")
[ "$start_size" -lt 1048576 ] || fail "the new container is $start_size bytes, not small"
pattern "$TMP/p.raw" 64
cp "$TMP/p.raw" "$TMP/expect.raw"
truncate -s 256M "$TMP/expect.raw"

nbdkit_tcp n 127.0.0.1 file dir="$SRV"
sshd_setup
sshd_start
agent_start
cat > "$TMP/t.tab" <<TAB
f-img   file://$SRV/f.qcow2   format=qcow2
w-img   file://$SRV/w.qcow2   format=qcow2,cache=writeback
c-img   file://$SRV/c.qcow2   format=qcow2
s-img   ssh://127.0.0.1:$SSHD_PORT$SRV/s.qcow2  format=qcow2,known-hosts=$SSHD_KNOWN_HOSTS
e-img   ssh://127.0.0.1:$SSHD_PORT$SRV/e.qcow2  format=qcow2,known-hosts=$SSHD_KNOWN_HOSTS
n-img   nbd://127.0.0.1:$(nbdkit_port n)/n.qcow2  format=qcow2
TAB
nd_mount "$TMP/t.tab" "$TMP/m"
for x in f w s; do
    dd if="$TMP/p.raw" of="$TMP/m/$x-img" bs=1M conv=notrunc,fsync status=none ||
        { show_log "$TMP/m.log"; fail "$x-img: the 64 MiB write failed"; }
    cmp -n $((64 << 20)) "$TMP/m/$x-img" "$TMP/p.raw" || fail "$x-img: reads back wrong"
done
dd if="$TMP/p.raw" of="$TMP/m/c-img" bs=1M count=16 conv=notrunc,fsync status=none ||
    { show_log "$TMP/m.log"; fail "c-img: the 16 MiB write failed"; }
cmp -n $((16 << 20)) "$TMP/m/c-img" "$TMP/p.raw" || fail "c-img: reads back wrong"
# Extended L2: pieces of 1 byte to 70 KB (fsync'd), and holes punched.
for i in $(seq 1 60); do
    off=$(( (RANDOM * 997 + RANDOM) % (32 * 1048576 - 70000) ))
    len=$(( 1 + (RANDOM * 3) % 70000 ))
    if [ $((i % 5)) = 0 ]; then
        fallocate -p -o $off -l $len "$TMP/m/e-img" || fail "e-img: punch hole $i"
        dd if=/dev/zero of="$TMP/e.expect" bs=$len count=1 seek=$off oflag=seek_bytes conv=notrunc status=none
        continue
    fi
    head -c $len /dev/urandom > "$TMP/piece"
    dd if="$TMP/piece" of="$TMP/m/e-img" bs=$len seek=$off oflag=seek_bytes conv=notrunc,fsync status=none || fail "e-img: write $i"
    dd if="$TMP/piece" of="$TMP/e.expect" bs=$len seek=$off oflag=seek_bytes conv=notrunc status=none
done
cmp "$TMP/m/e-img" "$TMP/e.expect" || fail "e-img: reads back wrong"
# NBD: no room past the export's end; a clear ENOSPC.
if dd if="$TMP/p.raw" of="$TMP/m/n-img" bs=1M count=4 conv=notrunc,fsync status=none 2>"$TMP/n.err"; then
    fail "n-img: a write past a fixed-size container succeeded"
fi
grep -q "No space left on device" "$TMP/n.err" || { cat "$TMP/n.err"; fail "n-img: not ENOSPC"; }
grep -q "cannot grow" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "n-img: no message saying the container cannot grow"; }
nd_unmount "$TMP/m"
for x in f w s; do
    size=$(stat -c %s "$SRV/$x.qcow2")
    [ "$size" -gt $((64 << 20)) ] || fail "$x.qcow2: the container did not grow ($size bytes)"
    qemu-img check -q "$SRV/$x.qcow2" || { qemu-img check "$SRV/$x.qcow2"; fail "$x.qcow2: qemu-img check: not clean"; }
    qemu-img compare -q -f qcow2 -F raw "$SRV/$x.qcow2" "$TMP/expect.raw" ||
        fail "$x.qcow2: qemu-img compare: the image differs from the pattern"
done
rt_after=$(od -An -tu1 -j56 -N4 "$SRV/c.qcow2" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
[ "$rt_after" -ge $((4 * rt_before)) ] || fail "c.qcow2: the refcount table has $rt_after clusters ($rt_before before)"
qemu-img check -q "$SRV/c.qcow2" || { qemu-img check "$SRV/c.qcow2"; fail "c.qcow2: qemu-img check: not clean"; }
head -c 16M "$TMP/p.raw" > "$TMP/c.expect"; truncate -s 64M "$TMP/c.expect"
qemu-img compare -q -f qcow2 -F raw "$SRV/c.qcow2" "$TMP/c.expect" || fail "c.qcow2: qemu-img compare: the image differs"
qemu-img check -q "$SRV/n.qcow2" || fail "n.qcow2: qemu-img check after the refused write"
qemu-img check -q "$SRV/e.qcow2" || { qemu-img check "$SRV/e.qcow2"; fail "e.qcow2: qemu-img check: not clean"; }
qemu-img compare -q -f qcow2 -F raw "$SRV/e.qcow2" "$TMP/e.expect" || fail "e.qcow2: qemu-img compare: the image differs"
# Partial writes left subclusters unallocated: qemu-img map shows ranges
# read from the backing file (depth 1) that start inside a 64 KiB cluster.
qemu-img map --output=json "$SRV/e.qcow2" > "$TMP/e.map"
python3 -c 'import json,sys; sys.exit(not any(r["depth"] == 1 and r["start"] % 65536 for r in json.load(open(sys.argv[1]))))' "$TMP/e.map" ||
    fail "e.qcow2: no cluster is part written, part read from the backing file"
echo "qcow2 containers grew from $start_size bytes over file and sftp; refcount table $rt_before -> $rt_after clusters; extended L2 over sftp checked; nbd refused with ENOSPC"

#!/bin/bash
# gluster-qcow2-grow.sh: a qcow2 image on a GlusterFS volume grows as the
# guest writes (a write past the end of a gluster file extends it): an
# image made with `qemu-img create -f qcow2 X 256M` (about 200 KiB), in
# QEMU's json: form, takes 64 MiB of a pattern through the mount; after
# the unmount the image in the brick passes `qemu-img check` and
# `qemu-img compare` finds the raw pattern. Starts glusterd: run it under
# the heavy-test lock (flock /tmp/nd-heavy.lock).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/glusterd.sh"
requires qemu-img
gluster_lsan_suppress

VOL=ndq$$
glusterd_start "$TMP/gd"
glusterd_volume $VOL
B=$GD_BRICK
# A one-brick volume finds a file put straight into its brick.
qemu-img create -q -f qcow2 "$B/g.qcow2" 256M || fail "qemu-img create"
start_size=$(stat -c %s "$B/g.qcow2")
pattern "$TMP/p.raw" 64
cp "$TMP/p.raw" "$TMP/expect.raw"
truncate -s 256M "$TMP/expect.raw"

cat > "$TMP/tab" <<TAB
g  json:{"driver":"qcow2","file":{"driver":"gluster","volume":"$VOL","path":"g.qcow2","server":[{"type":"tcp","host":"127.0.0.1","port":24007}]}}
TAB
nd_mount "$TMP/tab" "$TMP/m"
[ "$(stat -c %s "$TMP/m/g")" = $((256 << 20)) ] || fail "g: not the virtual size"
dd if="$TMP/p.raw" of="$TMP/m/g" bs=1M conv=notrunc,fsync status=none ||
    { show_log "$TMP/m.log"; fail "g: the 64 MiB write failed"; }
cmp -n $((64 << 20)) "$TMP/m/g" "$TMP/p.raw" || fail "g: reads back wrong"
nd_unmount "$TMP/m"
size=$(stat -c %s "$B/g.qcow2")
[ "$size" -gt $((64 << 20)) ] || fail "g.qcow2: the container did not grow ($size bytes)"
qemu-img check -q "$B/g.qcow2" || { qemu-img check "$B/g.qcow2"; fail "g.qcow2: qemu-img check: not clean"; }
qemu-img compare -q -f qcow2 -F raw "$B/g.qcow2" "$TMP/expect.raw" ||
    fail "g.qcow2: qemu-img compare: the image differs from the pattern"
echo "qcow2 over gluster grew from $start_size to $size bytes; check clean, compare equal"

#!/bin/bash
# gluster-qcow2-grow.sh: a qcow2 image on a GlusterFS volume grows as the
# guest writes (a write past the end of a gluster file extends it): an
# image made with `qemu-img create -f qcow2 X 256M` (about 200 KiB), in
# QEMU's json: form, takes 64 MiB of a pattern through the mount; after
# the unmount the image in the brick passes `qemu-img check` and
# `qemu-img compare` finds the raw pattern. A second image, in the dotted
# form, gets an ext4 made through the mount, loop-mounted and written;
# e2fsck -f finds it clean through the mount and in qemu-img's raw
# conversion, whose files match what was written. Starts glusterd: run it
# under the heavy-test lock (flock /tmp/nd-heavy.lock).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/glusterd.sh"
. "$TOP/tests/lib/mount.sh"
requires qemu-img
requires mkfs.ext4
requires e2fsck
gluster_lsan_suppress

VOL=ndq$$
glusterd_start "$TMP/gd"
glusterd_volume $VOL
B=$GD_BRICK
# A one-brick volume finds a file put straight into its brick.
qemu-img create -q -f qcow2 "$B/g.qcow2" 256M || fail "qemu-img create"
qemu-img create -q -f qcow2 "$B/e.qcow2" 128M || fail "qemu-img create"
start_size=$(stat -c %s "$B/g.qcow2")
pattern "$TMP/p.raw" 64
cp "$TMP/p.raw" "$TMP/expect.raw"
truncate -s 256M "$TMP/expect.raw"

cat > "$TMP/tab" <<TAB
g  json:{"driver":"qcow2","file":{"driver":"gluster","volume":"$VOL","path":"g.qcow2","server":[{"type":"tcp","host":"127.0.0.1","port":24007}]}}
e  driver=qcow2,file.driver=gluster,file.volume=$VOL,file.path=/e.qcow2,file.server.0.type=tcp,file.server.0.host=127.0.0.1,file.server.0.port=24007
TAB
nd_mount "$TMP/tab" "$TMP/m"
[ "$(stat -c %s "$TMP/m/g")" = $((256 << 20)) ] || fail "g: not the virtual size"
dd if="$TMP/p.raw" of="$TMP/m/g" bs=1M conv=notrunc,fsync status=none ||
    { show_log "$TMP/m.log"; fail "g: the 64 MiB write failed"; }
cmp -n $((64 << 20)) "$TMP/m/g" "$TMP/p.raw" || fail "g: reads back wrong"
# ext4 inside the decoded image, written through a loop device.
mkfs.ext4 -q -F "$TMP/m/e" >/dev/null 2>&1 || fail "e: mkfs.ext4 through the mount"
loop_mount "$TMP/m/e" "$TMP/fs"
mkdir -p "$TMP/fs/d" && cp "$TMP/p.raw" "$TMP/fs/d/p" && seq 1 100000 > "$TMP/fs/seq" ||
    fail "e: writing files into the ext4"
sync
loop_umount "$TMP/fs"
e2fsck -f -n "$TMP/m/e" > "$TMP/fsck.log" 2>&1 || { cat "$TMP/fsck.log"; fail "e: e2fsck -f through the mount"; }
nd_unmount "$TMP/m"
qemu-img check -q "$B/e.qcow2" || { qemu-img check "$B/e.qcow2"; fail "e.qcow2: qemu-img check: not clean"; }
qemu-img convert -O raw "$B/e.qcow2" "$TMP/e.raw" || fail "e.qcow2: qemu-img convert"
e2fsck -f -n "$TMP/e.raw" > "$TMP/fsck.log" 2>&1 || { cat "$TMP/fsck.log"; fail "e.raw: e2fsck -f"; }
loop_mount "$TMP/e.raw" "$TMP/fs2"
cmp "$TMP/fs2/d/p" "$TMP/p.raw" && seq 1 100000 | cmp - "$TMP/fs2/seq" ||
    fail "e.raw: the files differ from what was written"
loop_umount "$TMP/fs2"
size=$(stat -c %s "$B/g.qcow2")
[ "$size" -gt $((64 << 20)) ] || fail "g.qcow2: the container did not grow ($size bytes)"
qemu-img check -q "$B/g.qcow2" || { qemu-img check "$B/g.qcow2"; fail "g.qcow2: qemu-img check: not clean"; }
qemu-img compare -q -f qcow2 -F raw "$B/g.qcow2" "$TMP/expect.raw" ||
    fail "g.qcow2: qemu-img compare: the image differs from the pattern"
echo "qcow2 over gluster grew from $start_size to $size bytes; check clean, compare equal; ext4 in a dotted-key qcow2 entry fsck clean, files intact"

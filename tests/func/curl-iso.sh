#!/bin/bash
# The QEMU document's example flow: a read-only remote ISO used as a
# cdrom image. genisoimage makes an ISO, nginx serves it over HTTPS (and
# HTTP); through the mount isoinfo lists and extracts files, a read-only
# loop device reads it, and where the kernel has iso9660 it is loop-mounted;
# the files inside match the originals.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"
requires genisoimage
requires isoinfo

nginx_start
mkdir -p "$TMP/tree/boot" "$TMP/tree/data"
pattern "$TMP/tree/data/payload.bin" 6
head -c 100000 /dev/urandom > "$TMP/tree/boot/kernel.img"
echo "netdiskfs cdrom test" > "$TMP/tree/README.TXT"
genisoimage -quiet -R -J -V NDTEST -o "$NGINX_ROOT/live.iso" "$TMP/tree" 2>"$TMP/geniso.log" ||
    { show_log "$TMP/geniso.log"; fail "genisoimage failed"; }

cat > "$TMP/tab" <<TAB
cdrom   $NGINX_TLS_URL/live.iso  cainfo=$NGINX_CA,readahead=64k
cdrom2  json:{"file.driver":"http","file.url":"$NGINX_URL/live.iso","file.readahead":"64k"}
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
ISO=$TMP/mnt/cdrom
cmp "$ISO" "$NGINX_ROOT/live.iso" || fail "the ISO differs from the served file"
cmp "$TMP/mnt/cdrom2" "$NGINX_ROOT/live.iso" || fail "the ISO over HTTP differs"

isoinfo -d -i "$ISO" > "$TMP/isoinfo.d" || fail "isoinfo -d failed on the mounted ISO"
grep -q "Volume id: NDTEST" "$TMP/isoinfo.d" || { cat "$TMP/isoinfo.d"; fail "wrong volume id"; }
isoinfo -R -f -i "$ISO" > "$TMP/isoinfo.f" || fail "isoinfo -f failed"
grep -q "/data/payload.bin" "$TMP/isoinfo.f" || { cat "$TMP/isoinfo.f"; fail "payload.bin not listed"; }
isoinfo -R -x /data/payload.bin -i "$ISO" > "$TMP/payload" || fail "isoinfo -x failed"
cmp "$TMP/payload" "$TMP/tree/data/payload.bin" || fail "the file extracted with isoinfo differs"
echo "ok: isoinfo reads the remote ISO (volume NDTEST) and extracts payload.bin intact"

# The kernel reads it as a block device: a read-only loop device on the
# FUSE file, then (where the kernel has iso9660) a loop mount.
if [ -e /dev/loop-control ] && command -v losetup >/dev/null; then
    dev=$(losetup -f --show -r "$ISO" 2>"$TMP/losetup.err") ||
        { cat "$TMP/losetup.err"; fail "losetup -r on the remote ISO failed"; }
    cleanup_fn "losetup -d $dev 2>/dev/null"
    cmp "$dev" "$NGINX_ROOT/live.iso" || fail "$dev (loop on the ISO) differs"
    isoinfo -R -x /boot/kernel.img -i "$dev" | cmp - "$TMP/tree/boot/kernel.img" ||
        fail "kernel.img read through $dev differs"
    echo "ok: loop device $dev on the remote ISO reads the same bytes"
    grep -qw iso9660 /proc/filesystems || modprobe isofs 2>/dev/null || true
    if grep -qw iso9660 /proc/filesystems; then
        mkdir "$TMP/cd"
        mount -o ro -t iso9660 "$dev" "$TMP/cd" || fail "mount -o loop,ro of the ISO failed"
        cleanup_fn "umount '$TMP/cd' 2>/dev/null || umount -l '$TMP/cd'"
        for f in data/payload.bin boot/kernel.img README.TXT; do
            cmp "$TMP/cd/$f" "$TMP/tree/$f" || fail "$f differs inside the loop-mounted ISO"
        done
        umount "$TMP/cd" || fail "umount of the loop-mounted ISO failed"
        echo "ok: mount -o loop,ro of the remote ISO: the files inside match"
    else
        echo "note: this kernel has no iso9660 filesystem: loop mount not tried"
    fi
    losetup -d "$dev" || fail "losetup -d $dev failed"
else
    echo "note: no loop devices here: isoinfo checks only"
fi
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt"

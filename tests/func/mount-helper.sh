#!/bin/bash
# mount-helper: `mount -t netdiskfs`, `mount -t fuse.netdiskfs`, an fstab
# line through `mount -T`, `mount -a` with noauto, nofail, fake mounts, a
# URL as the source, and `umount`, all through mount(8) and the helper.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
requires mount
requires umount

pattern "$TMP/a.img" 4
pattern "$TMP/b.img" 2
TAB=$TMP/disks.tab
cat >"$TAB" <<EOT
# two local disks
a  $TMP/a.img
b  file://$TMP/b.img   readahead=128K
EOT
chmod 600 "$TAB"
MNT=$TMP/mnt
mkdir -p "$MNT" "$TMP/mnt2"
helper_install
unmount_at_exit "$MNT"
unmount_at_exit "$TMP/mnt2"

echo "== mount -t netdiskfs TABLE MNT -o ro,allow_other,_netdev,nofail"
mount -t netdiskfs "$TAB" "$MNT" -o ro,allow_other,_netdev,nofail || fail "mount -t netdiskfs failed"
mountpoint -q "$MNT" || fail "not mounted"
line=$(awk -v m="$MNT" '$2 == m' /proc/self/mounts)
echo "$line"
[ "$(echo "$line" | awk '{print $1, $3}')" = "$TAB fuse.netdiskfs" ] || fail "/proc/mounts: $line (want $TAB ... fuse.netdiskfs)"
echo "$line" | grep -q allow_other || fail "allow_other did not reach the kernel: $line"
[ "$(ls "$MNT")" = "$(printf 'a\nb')" ] || fail "entries: $(ls "$MNT")"
cmp "$MNT/a" "$TMP/a.img" || fail "a differs"
cmp "$MNT/b" "$TMP/b.img" || fail "b differs"
[ "$(status_field "$MNT" a read_only)" = true ] || fail "-o ro: a is not read-only"
if dd if=/dev/zero of="$MNT/a" bs=4k count=1 conv=notrunc 2>/dev/null; then
    fail "a write on a -o ro mount succeeded"
fi
[ "$(stat -c %a "$MNT/a")" = 444 ] || fail "mode of a: $(stat -c %a "$MNT/a")"
pid=$(status_pid "$MNT")
tr '\0' ' ' </proc/"$pid"/cmdline; echo
echo "== umount MNT"
umount "$MNT" || fail "umount failed"
wait_unmounted "$MNT" "$pid"

echo "== mount -t fuse.netdiskfs (read-write, options to the entries)"
mount -t fuse.netdiskfs "$TAB" "$MNT" -o readahead=1M,connections=2 || fail "mount -t fuse.netdiskfs failed"
[ "$(status_field "$MNT" a read_only)" = false ] || fail "a is read-only"
pattern "$TMP/w" 1
dd if="$TMP/w" of="$MNT/a" bs=64k seek=16 conv=notrunc,fsync status=none || fail "write through the mount failed"
pid=$(status_pid "$MNT")
umount "$MNT" || fail "umount failed"
wait_unmounted "$MNT" "$pid"
cmp <(dd if="$TMP/a.img" bs=64k skip=16 count=16 status=none) "$TMP/w" || fail "the write did not reach a.img"

echo "== fstab line, mount -T FSTAB MNT"
FSTAB=$TMP/fstab
cat >"$FSTAB" <<EOT
$TAB  $MNT  netdiskfs  defaults,_netdev,nofail  0 0
file://$TMP/b.img  $TMP/mnt2  netdiskfs  noauto,_netdev,ro  0 0
EOT
mount -T "$FSTAB" "$MNT" || fail "mount -T $FSTAB $MNT failed"
cmp "$MNT/b" "$TMP/b.img" || fail "b differs (fstab mount)"
[ "$(status_field "$MNT" a read_only)" = false ] || fail "fstab mount: a is read-only"
pid=$(status_pid "$MNT")
umount "$MNT" || fail "umount failed"
wait_unmounted "$MNT" "$pid"

echo "== mount -a -T FSTAB: the noauto line stays unmounted; twice is once"
mount -a -T "$FSTAB" || fail "mount -a failed"
mountpoint -q "$MNT" || fail "mount -a did not mount $MNT"
mountpoint -q "$TMP/mnt2" && fail "mount -a mounted the noauto line"
mount -a -T "$FSTAB" || fail "second mount -a failed"
[ "$(mount_count "$MNT")" = 1 ] || fail "second mount -a stacked another mount on $MNT"
pid=$(status_pid "$MNT")
umount "$MNT" || fail "umount failed"
wait_unmounted "$MNT" "$pid"

echo "== a URL as the source (the noauto line, mounted by its mount point)"
mount -T "$FSTAB" "$TMP/mnt2" || fail "mount of the noauto URL line failed"
[ "$(ls "$TMP/mnt2")" = b.img ] || fail "URL mount shows: $(ls "$TMP/mnt2")"
cmp "$TMP/mnt2/b.img" "$TMP/b.img" || fail "b.img differs"
src=$(awk -v m="$TMP/mnt2" '$2 == m {print $1}' /proc/self/mounts)
[ "$src" = "file://$TMP/b.img" ] || fail "source in /proc/mounts: $src"
pid=$(status_pid "$TMP/mnt2")
umount "$TMP/mnt2" || fail "umount failed"
wait_unmounted "$TMP/mnt2" "$pid"

echo "== credentials never reach /proc/mounts"
# The fsname the helper gives a URL with a password and a query (run with
# echo as the daemon: it prints the command line it would run).
port=$(free_port)
out=$(NETDISKFS_BIN=/bin/echo /sbin/mount.netdiskfs "http://joe:s3cret@127.0.0.1:$port/d.img?tok=x" "$MNT" -o ro)
echo "$out"
fsname=$(echo "$out" | grep -o 'fsname=[^,]*')
[ "$fsname" = "fsname=http://127.0.0.1:$port/d.img" ] || fail "fsname from the URL: '$fsname'"

echo "== nofail: a mount that fails exits 0 with nofail, non-zero without"
BAD=$TMP/bad.tab
echo "gone nbd+unix:///?socket=$TMP/nothing.sock" >"$BAD"
chmod 600 "$BAD"
if mount -t netdiskfs "$BAD" "$MNT" 2>"$TMP/err"; then
    fail "mount of an unreachable table succeeded"
fi
cat "$TMP/err"
grep -q "gone" "$TMP/err" || fail "the failure does not name the entry"
mount -t netdiskfs "$BAD" "$MNT" -o nofail 2>"$TMP/err" || fail "nofail: mount exited non-zero"
cat "$TMP/err"
grep -q nofail "$TMP/err" || fail "nofail: the failure was not reported"
mountpoint -q "$MNT" && fail "nofail: something got mounted"

echo "== through mount(8) (daemonized), SIGHUP reloads; so with a relative table path"
mount -t netdiskfs "$TAB" "$MNT" || fail "mount failed"
pid=$(status_pid "$MNT")
echo "c  $TMP/b.img" >>"$TAB"
kill -HUP "$pid"
wait_for 10 test -e "$MNT/c" || fail "SIGHUP did not add c to a mount made by mount(8)"
umount "$MNT" || fail "umount failed"
wait_unmounted "$MNT" "$pid"
(cd "$TMP" && "$ND" disks.tab mnt) || fail "netdiskfs disks.tab mnt (daemonized) failed"
unmount_at_exit "$MNT"
pid=$(status_pid "$MNT")
echo "d  $TMP/b.img" >>"$TAB"
kill -HUP "$pid"
wait_for 10 test -e "$MNT/d" || fail "SIGHUP did not reload a relative table path after daemonizing"
umount "$MNT" || fail "umount failed"
wait_unmounted "$MNT" "$pid"

echo "== mount -f (fake) mounts nothing"
mount -f -t netdiskfs "$TAB" "$MNT" || fail "mount -f failed"
mountpoint -q "$MNT" && fail "mount -f mounted"
echo "== a missing mount point is an error"
if mount -t netdiskfs "$TAB" "$TMP/nowhere" 2>/dev/null; then fail "mounted on a missing directory"; fi
echo "all mount(8) checks passed"

# shellcheck shell=bash
# mount.sh: helpers for the mount(8)/status/reload tests. Source it after
# functions.sh.
#
#   helper_install        put mount/mount.netdiskfs in /sbin as
#                         mount.netdiskfs and mount.fuse.netdiskfs (mount(8)
#                         only looks there), running $ND; restored at exit
#   status_field MNT NAME KEY   one field of entry NAME in MNT's status file
#                         (JSON null prints "null", true/false as such)
#   status_names MNT      the entry names in the status file, one a line
#   status_pid MNT        the daemon's PID from the status file
#   mount_count MNT       how many mounts sit on MNT
#   loop_mount FILE DIR, loop_umount DIR   a filesystem image on a loop device
#   wait_unmounted MNT PID   bounded wait until MNT is gone and PID exited
#   alive PID             PID runs (a zombie does not count)
#   hup_reload MNT [SECS] SIGHUP the daemon of MNT (pid in MNT.pid) and wait
#                         up to SECS (10) until its log (MNT.log) says one
#                         more reload ended; false if it does not

PY=/usr/bin/python3
[ -x $PY ] || PY=python3

_helper_saved=()

_helper_restore() {
    local f
    for f in /sbin/mount.netdiskfs /sbin/mount.fuse.netdiskfs; do
        rm -f "$f"
        [ -e "$TMP/saved.${f##*/}" ] && mv "$TMP/saved.${f##*/}" "$f"
    done
    return 0
}

helper_install() {
    local f
    for f in /sbin/mount.netdiskfs /sbin/mount.fuse.netdiskfs; do
        if [ -e "$f" ] || [ -L "$f" ]; then
            mv "$f" "$TMP/saved.${f##*/}" || fail "cannot move $f aside"
        fi
    done
    cleanup_fn _helper_restore
    install -m 755 "$TOP/mount/mount.netdiskfs" /sbin/mount.netdiskfs || fail "cannot install the helper in /sbin"
    ln -s mount.netdiskfs /sbin/mount.fuse.netdiskfs
    export NETDISKFS_BIN=$ND
}

status_field() {
    $PY - "$1/.netdiskfs/status" "$2" "$3" <<'EOF'
import json, sys
st = json.load(open(sys.argv[1]))
for e in st["entries"]:
    if e["name"] == sys.argv[2]:
        v = e.get(sys.argv[3])
        print(json.dumps(v) if not isinstance(v, str) else v)
        sys.exit(0)
print("no-such-entry")
sys.exit(1)
EOF
}

status_names() {
    $PY - "$1/.netdiskfs/status" <<'EOF'
import json, sys
for e in json.load(open(sys.argv[1]))["entries"]:
    print(e["name"])
EOF
}

status_pid() {
    $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$1/.netdiskfs/status"
}

mount_count() {
    local m
    m=$(realpath "$1")
    awk -v m="$m" '$2 == m { n++ } END { print n + 0 }' /proc/self/mounts
}

# alive PID: the process exists and is not a zombie (a daemonized
# netdiskfs is reaped by PID 1, whenever that gets to it).
alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

wait_unmounted() {
    local mnt=$1 pid=$2
    wait_for 20 sh -c "! mountpoint -q '$mnt'" || fail "$mnt still mounted"
    wait_for 20 eval "! alive $pid" || fail "daemon $pid still alive after unmount of $mnt"
}

# unmount_at_exit MNT: unmount MNT (lazily, if still mounted) at exit.
unmount_at_exit() {
    cleanup_fn "mountpoint -q '$1' 2>/dev/null && { umount '$1' 2>/dev/null || umount -l '$1'; }"
}

# loop_mount FILE DIR: FILE (a filesystem image, e.g. a file of the mount)
# on a loop device mounted at DIR, both undone at exit; LOOP is the device.
# loop_umount DIR: unmount it and free the device now.
loop_mount() { # FILE DIR
    mkdir -p "$2"
    LOOP=$(losetup -f --show "$1") || fail "losetup $1"
    cleanup_fn "losetup -d $LOOP 2>/dev/null"
    mount "$LOOP" "$2" || { losetup -d "$LOOP"; fail "mount $LOOP"; }
    cleanup_fn "umount $2 2>/dev/null"
}
loop_umount() { umount "$1" && losetup -d "$LOOP" || fail "umount $1"; }

hup_reload() {
    local mnt=$1 n
    n=$(grep -c 'reload: [0-9]* entries' "$mnt.log")
    kill -HUP "$(cat "$mnt.pid")"
    wait_for "${2:-10}" sh -c "[ \$(grep -c 'reload: [0-9]* entries' '$mnt.log') -gt $n ]"
}

#!/bin/bash
# mount-systemd: netdiskfs@.service. `systemd-analyze verify` accepts it (that
# one check is skipped when systemd-analyze is absent), and its commands,
# run as systemd would run them, work: ExecStartPre/ExecStart with the
# table and options from the environment, READY=1 on $NOTIFY_SOCKET only
# once the mount is live, ExecReload (SIGHUP), ExecStop (umount) followed at
# once by SIGTERM, ending with exit status 0 and the written data on disk.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"

UNIT=$TOP/mount/netdiskfs@.service
[ -f "$UNIT" ] || fail "$UNIT is missing"
MNT=$TMP/srv/disks
inst=$(systemd-escape --path "$MNT" 2>/dev/null || echo "${MNT#/}" | tr / -)

echo "== systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$TMP/units" "$TMP/man/man1" "$TMP/man/man5"
    sed "s|/usr/local/bin/netdiskfs|$ND|" "$UNIT" >"$TMP/units/netdiskfs@.service"
    cp "$TMP/units/netdiskfs@.service" "$TMP/units/netdiskfs@$inst.service"
    # Documentation= names man pages: let man(1) find ours.
    cp "$TOP"/man/*.1 "$TMP/man/man1/"
    cp "$TOP"/man/*.5 "$TMP/man/man5/"
    (cd "$TMP/units" && MANPATH=$TMP/man SYSTEMD_LOG_LEVEL=notice \
        systemd-analyze verify "./netdiskfs@$inst.service") >"$TMP/verify.log" 2>&1
    rc=$?
    cat "$TMP/verify.log"
    [ $rc = 0 ] && ! [ -s "$TMP/verify.log" ] || fail "systemd-analyze verify: exit $rc, output above"
    echo "ok: netdiskfs@$inst.service verifies"
else
    echo "SKIP (this check only): systemd-analyze is not installed"
fi

echo "== the unit's settings"
grep -qx 'Type=notify' "$UNIT" || fail "not Type=notify"
grep -qx 'Restart=on-failure' "$UNIT" || fail "no Restart=on-failure"
grep -qx 'Environment=NETDISKFS_TABLE=/etc/netdisk.tab' "$UNIT" || fail "the default table is not /etc/netdisk.tab"
grep -q '^EnvironmentFile=-' "$UNIT" || fail "no optional EnvironmentFile"
grep -q '^ExecStop=.*umount %f' "$UNIT" || fail "ExecStop does not unmount"

# One command line of the unit as systemd would run it: %f is the mount
# point, ${VAR} one word, $VAR split on blanks, a leading '-' ignored.
unit_cmd() { # KEY -> fills the array cmd
    local line w
    line=$(sed -n "s/^$1=//p" "$UNIT")
    [ -n "$line" ] || fail "no $1= in the unit"
    line=${line#-}
    cmd=()
    for w in $line; do
        # shellcheck disable=SC2206 # $NETDISKFS_OPTS splits as in systemd
        case $w in
        '${NETDISKFS_TABLE}') cmd+=("$NETDISKFS_TABLE") ;;
        '$NETDISKFS_OPTS') cmd+=($NETDISKFS_OPTS) ;;
        '$MAINPID') cmd+=("$MAINPID") ;;
        %f) cmd+=("$MNT") ;;
        /usr/local/bin/netdiskfs) cmd+=("$ND") ;;
        *'$'* | *%*) fail "unit_cmd: unknown substitution $w" ;;
        *) cmd+=("$w") ;;
        esac
    done
}

pattern "$TMP/a.img" 2
pattern "$TMP/b.img" 1
NETDISKFS_TABLE=$TMP/netdisk.tab
NETDISKFS_OPTS="-o readahead=128K -v"
cat >"$NETDISKFS_TABLE" <<EOT
a  file://$TMP/a.img  cache=writeback
EOT

echo "== ExecStartPre, ExecStart with NOTIFY_SOCKET"
unit_cmd ExecStartPre
"${cmd[@]}" || fail "ExecStartPre failed: ${cmd[*]}"
[ -d "$MNT" ] || fail "ExecStartPre did not create $MNT"
NOTIFY=$TMP/notify.sock
# Listen like systemd; when READY=1 arrives, note whether the mount is live.
$PY - "$NOTIFY" "$MNT" >"$TMP/notify.out" 2>&1 <<'PYEOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
while True:
    msg = s.recv(4096).decode()
    if "READY=1" in msg.split("\n"):
        print("READY mounted=%s" % os.path.ismount(sys.argv[2]), flush=True)
        break
PYEOF
listener=$!
wait_for 10 test -S "$NOTIFY" || fail "notify listener did not start"
unit_cmd ExecStart
echo "+ ${cmd[*]}"
NOTIFY_SOCKET=$NOTIFY "${cmd[@]}" >"$TMP/daemon.log" 2>&1 &
MAINPID=$!
cleanup_fn "is_mounted '$MNT' && umount -l '$MNT'; kill $MAINPID 2>/dev/null"
wait $listener || { show_log "$TMP/daemon.log"; fail "no READY=1 from the daemon"; }
cat "$TMP/notify.out"
grep -qx "READY mounted=True" "$TMP/notify.out" || fail "READY=1 came before the mount was live"
mountpoint -q "$MNT" || fail "not mounted"
cmp "$MNT/a" "$TMP/a.img" || fail "a differs"
[ "$(status_pid "$MNT")" = "$MAINPID" ] || fail "the daemon is not the main process (status pid $(status_pid "$MNT"), main $MAINPID)"
grep -q "readahead" <(tr '\0' ' ' </proc/$MAINPID/cmdline) || fail "NETDISKFS_OPTS did not reach the command line"

echo "== ExecReload"
echo "b  file://$TMP/b.img" >>"$NETDISKFS_TABLE"
unit_cmd ExecReload
"${cmd[@]}" || fail "ExecReload failed"
wait_for 10 test -e "$MNT/b" || { show_log "$TMP/daemon.log"; fail "b did not appear after ExecReload"; }
cmp "$MNT/b" "$TMP/b.img" || fail "b differs"

echo "== ExecStop, then SIGTERM at once (as systemd does)"
pattern "$TMP/w" 1
exec 8<>"$MNT/a"
dd if="$TMP/w" bs=64k seek=8 conv=notrunc status=none >&8 || fail "write to a failed"
exec 8>&-
unit_cmd ExecStop
"${cmd[@]}" || fail "ExecStop failed: ${cmd[*]}"
kill -TERM $MAINPID 2>/dev/null
wait $MAINPID
rc=$?
show_log "$TMP/daemon.log"
[ $rc = 0 ] || fail "the daemon exited $rc after ExecStop"
mountpoint -q "$MNT" && fail "still mounted after ExecStop"
cmp <(dd if="$TMP/a.img" bs=64k skip=8 count=16 status=none) "$TMP/w" || fail "the written data is not in a.img after stop"
echo "systemd unit checks passed"

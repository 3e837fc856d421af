#!/bin/bash
# ssh-reconnect.sh: sshd is killed (listener AND every live session) and
# restarted in the middle of a long dd, reading and then writing: each copy
# completes with the right checksum over new sessions (same host-key check).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"

sshd_setup
sshd_start
agent_start
IMG=$TMP/disk.img
pattern "$IMG" 64
cat > "$TMP/r.tab" <<EOF
d ssh://127.0.0.1:$SSHD_PORT$IMG known-hosts=$SSHD_KNOWN_HOSTS,reconnect-delay=30,timeout=5,cache=none
EOF
nd_mount "$TMP/r.tab" "$TMP/m"

# restart_during_dd PID: freeze dd once it has started, take the whole
# server down (live sessions too), let dd run into the dead connections,
# then bring sshd back on the same port with the same host key.
restart_during_dd() {
    local dd=$1 logins
    kill -STOP "$dd"
    kill -0 "$dd" 2>/dev/null || fail "dd finished before the restart"
    logins=$(grep -c "Accepted publickey" "$SSHD_LOG")
    sshd_stop
    ss -Htn state established "( sport = :$SSHD_PORT )" | grep -q . &&
        fail "sessions to sshd survived its stop"
    kill -CONT "$dd"
    sleep 1
    sshd_start
    wait_for 30 sh -c "[ \$(grep -c 'Accepted publickey' '$SSHD_LOG') -gt $logins ]" ||
        { show_log "$TMP/m.log"; fail "netdiskfs did not log in again"; }
}

# wait_progress FILE BYTES: wait (bounded) until FILE holds BYTES.
wait_progress() {
    wait_for 30 sh -c "[ \$(stat -c %s '$1' 2>/dev/null || echo 0) -ge $2 ]" ||
        fail "dd made no progress"
}

# Read: copy the disk out of the mount.
sum=$(sha256sum < "$IMG")
dd if="$TMP/m/d" of="$TMP/copy" bs=256k iflag=direct 2>"$TMP/dd1.err" &
ddpid=$!
wait_progress "$TMP/copy" $(( 4 * 1048576 ))
restart_during_dd $ddpid
wait $ddpid || { cat "$TMP/dd1.err"; show_log "$TMP/m.log"; fail "dd (read) failed across the restart"; }
[ "$(sha256sum < "$TMP/copy")" = "$sum" ] || fail "read copy: wrong checksum"
grep -q "connection lost" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "no connection loss logged"; }

# Write: copy new data into the mount, synchronously.
pattern "$TMP/new" 64
sum=$(sha256sum < "$TMP/new")
dd if="$TMP/new" of="$TMP/m/d" bs=256k oflag=direct,sync conv=notrunc 2>"$TMP/dd2.err" &
ddpid=$!
# Progress, seen on the server: its first 4 MiB are the new data.
wait_for 30 cmp -s -n 4194304 "$TMP/new" "$IMG" || fail "dd (write) made no progress"
restart_during_dd $ddpid
wait $ddpid || { cat "$TMP/dd2.err"; show_log "$TMP/m.log"; fail "dd (write) failed across the restart"; }
[ "$(sha256sum < "$IMG")" = "$sum" ] || fail "the server's file has the wrong checksum after the write"
cmp "$TMP/m/d" "$TMP/new" || fail "the mount differs from what was written"
nd_unmount "$TMP/m"
echo "ok: read and write dd survive an sshd restart with the right checksums"

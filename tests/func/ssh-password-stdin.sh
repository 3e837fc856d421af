#!/bin/bash
# ssh-password-stdin: password-file=- reads the password from standard
# input once, at start, before netdiskfs turns into a daemon (whose stdin
# is /dev/null), and keeps it: connections the pool opens later and the
# sessions after a server restart log in with the same password.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"

sshd_setup
PW=pw-$RANDOM-$RANDOM
sshd_add_user "$PW"
sshd_start "PasswordAuthentication yes" "AuthenticationMethods password"
unset SSH_AUTH_SOCK
IMG=$TMP/disk.img
pattern "$IMG" 16
chmod 644 "$IMG"
U=$SSHD_USER
echo "d ssh://$U@127.0.0.1:$SSHD_PORT$IMG  known-hosts=$SSHD_KNOWN_HOSTS,password-file=-,connections=4,cache=none,reconnect-delay=8,timeout=3" > "$TMP/tab"

# Daemonized (no -f): the parent returns once the mount is live.
mkdir -p "$TMP/m"
_nd_mounts+=("$TMP/m")
printf '%s\n' "$PW" | timeout 30 "$ND" "$TMP/tab" "$TMP/m" --pidfile "$TMP/m.pid" ||
    { show_log "$SSHD_LOG"; fail "netdiskfs did not mount"; }
logins() { grep -c "Accepted password for $U" "$SSHD_LOG"; }

# Four readers at once: the pool grows past the first connection.
pids=()
for i in 0 1 2 3; do
    timeout 60 dd if="$TMP/m/d" of="$TMP/part$i" bs=1M skip=$((i * 4)) count=4 iflag=direct status=none &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a parallel read failed"; done
cat "$TMP/part"{0,1,2,3} | cmp - "$IMG" || fail "parallel reads differ from the remote file"
n=$(logins)
echo "ok: $n password logins for the first reads"
[ "$n" -ge 2 ] || { show_log "$SSHD_LOG"; fail "the pool did not grow ($n logins)"; }
grep -q "Failed password\|authentication failure" "$SSHD_LOG" &&
    { show_log "$SSHD_LOG"; fail "a pooled connection sent a wrong password"; }

# Server restart: the reconnect logs in with the password read at start.
sshd_stop
sshd_start "PasswordAuthentication yes" "AuthenticationMethods password"
timeout 60 cmp "$TMP/m/d" "$IMG" || { show_log "$SSHD_LOG"; fail "reads after the server restart failed or differ"; }
[ "$(logins)" -gt "$n" ] || fail "no new password login after the restart"
grep -q "Failed password\|authentication failure" "$SSHD_LOG" &&
    { show_log "$SSHD_LOG"; fail "a reconnect sent a wrong password"; }
echo "ok: the restart logged in again with the password from stdin"
nd_unmount "$TMP/m"

#!/bin/bash
# ssh-timeout.sh: a frozen server (sshd and its sessions SIGSTOPped: the
# TCP connections stay up, nothing answers) never hangs a request: reads
# fail with EIO within timeout + reconnect-delay (plus slack), the mount
# stays alive, works again once the server resumes, and unmounts promptly
# while the server is frozen. Mounting a frozen server fails in bounded time.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"

sshd_setup
sshd_start
agent_start
IMG=$TMP/disk.img
pattern "$IMG" 16
cat > "$TMP/t.tab" <<EOF
d ssh://127.0.0.1:$SSHD_PORT$IMG known-hosts=$SSHD_KNOWN_HOSTS,timeout=2,reconnect-delay=4,cache=none
EOF
nd_mount "$TMP/t.tab" "$TMP/m"
cmp -n 1048576 "$TMP/m/d" "$IMG" || fail "first read differs"

sshd_signal STOP
cleanup_fn "sshd_signal CONT"
start=$(date +%s)
if timeout 60 dd if="$TMP/m/d" of=/dev/null bs=1M skip=8 count=1 iflag=direct 2>"$TMP/dd.err"; then
    fail "a read from a frozen server succeeded"
fi
secs=$(( $(date +%s) - start ))
[ $secs -le 15 ] || fail "the read took $secs s to fail (bound: 15 s)"
grep -q "Input/output error" "$TMP/dd.err" || { cat "$TMP/dd.err"; fail "the read did not fail with EIO"; }
grep -q "no answer from .* for 2 s" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "no timeout message"; }
mountpoint -q "$TMP/m" || fail "the mount died"
ls "$TMP/m" >/dev/null || fail "the mount does not answer"

sshd_signal CONT
cmp "$TMP/m/d" "$IMG" || { show_log "$TMP/m.log"; fail "after the server resumed: differs"; }

# Unmount while the server is frozen: bounded (nd_unmount waits 20 s).
sshd_signal STOP
start=$(date +%s)
nd_unmount "$TMP/m"
secs=$(( $(date +%s) - start ))
[ $secs -le 15 ] || fail "unmount took $secs s with a frozen server"

# Mount against a frozen server: fails, in bounded time.
start=$(date +%s)
mkdir -p "$TMP/m2"
if timeout 60 "$ND" "$TMP/t.tab" "$TMP/m2" -f --strict >"$TMP/m2.log" 2>&1; then
    fusermount3 -u "$TMP/m2" 2>/dev/null
    fail "mounted a frozen server"
fi
secs=$(( $(date +%s) - start ))
[ $secs -le 15 ] || fail "mount against a frozen server took $secs s to fail"
grep -q "cannot connect to .*Timeout" "$TMP/m2.log" || { show_log "$TMP/m2.log"; fail "no connect timeout message"; }
sshd_signal CONT
echo "ok: frozen server: EIO in bounded time, mount alive, recovers, unmounts promptly; frozen mount fails in ${secs} s"

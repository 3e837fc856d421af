#!/bin/bash
# SIGTERM and SIGINT unmount cleanly after requests in flight, with no
# stale mount; the daemonised form returns once the mount is live; a URL
# given as SOURCE is one file named after it; secrets leave argv.
. "$(dirname "$0")/../lib/functions.sh"

pattern "$TMP/a.img" 256
printf 'a %s\n' "$TMP/a.img" > "$TMP/t.tab"

for sig in TERM INT; do
    nd_mount "$TMP/t.tab" "$TMP/mnt"
    pid=$(cat "$TMP/mnt.pid")
    dd if="$TMP/mnt/a" of=/dev/null bs=1M iflag=direct status=none &
    ddpid=$!
    sleep 0.3
    kill -$sig "$pid"
    wait_for 20 sh -c "! kill -0 $pid" || fail "daemon alive 20 s after SIG$sig"
    wait $ddpid 2>/dev/null
    mountpoint -q "$TMP/mnt" && fail "stale mount after SIG$sig"
    [ -e "$TMP/mnt.pid" ] && fail "pidfile left after SIG$sig"
    ls "$TMP/mnt" >/dev/null 2>&1 || fail "mount point unusable after SIG$sig"
done

# Daemonised: the command returns after the mount is live, pidfile written.
mkdir -p "$TMP/d"
_nd_mounts+=("$TMP/d")
"$ND" "$TMP/t.tab" "$TMP/d" --pidfile "$TMP/d.pid" || fail "daemon start"
mountpoint -q "$TMP/d" || fail "not mounted when the command returned"
[ -s "$TMP/d.pid" ] || fail "no pidfile when the command returned"
cmp <(head -c 1M "$TMP/d/a") <(head -c 1M "$TMP/a.img") || fail "daemon read"
fusermount3 -u "$TMP/d" || fail "fusermount3 -u"
wait_for 20 sh -c "! kill -0 $(cat "$TMP/d.pid" 2>/dev/null || echo 999999)" || fail "daemon did not exit"

# A single URL as SOURCE, with a secret on the command line.
nd_mount "file://$TMP/a.img" "$TMP/u" -o cookie=topsecret123
[ "$(ls "$TMP/u")" = a.img ] || fail "single URL listing: $(ls "$TMP/u")"
cmp <(head -c 4M "$TMP/u/a.img") <(head -c 4M "$TMP/a.img") || fail "single URL data"
pid=$(cat "$TMP/u.pid")
tr '\0' ' ' < /proc/$pid/cmdline | grep -q topsecret123 && fail "secret visible in /proc/$pid/cmdline"
nd_unmount "$TMP/u"
echo ok

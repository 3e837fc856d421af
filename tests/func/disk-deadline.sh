#!/bin/bash
# disk-deadline: with only reconnect-delay given, a request never waits
# longer than reconnect-delay + the default timeout (5 s), whatever the
# backend: the NBD server is frozen (SIGSTOP) and an O_DIRECT read fails
# with EIO within that bound (NBD's own default used to be 30 s); the next
# read fails at once (the entry is failed); once the server runs again the
# entry serves the right bytes.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 8
nbdkit_tcp s 127.0.0.1 file "$TMP/disk.img"
echo "s nbd://127.0.0.1:$(nbdkit_port s)/  reconnect-delay=2" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"
rd() { dd if="$TMP/mnt/s" of="$TMP/out" bs=64k count=1 skip="$1" iflag=direct status=none; }
rd 0 || fail "first read failed"

pid=$(nbdkit_pid s)
kill -STOP "$pid"
cleanup_fn "kill -CONT $pid 2>/dev/null"
# reconnect-delay 2 + timeout 5, plus slack for a loaded machine.
expect_eio 10000 "$TMP/mnt.log" "read from a frozen server" "$TMP/mnt/s" 50
echo "ok: frozen server, defaults: EIO after $EIO_MS ms (bound 7 s + slack)"
sleep 3 # the entry is failed once reconnect-delay has run out
expect_eio 500 "$TMP/mnt.log" "read while failed" "$TMP/mnt/s" 60
echo "ok: next read fails at once: $EIO_MS ms"

kill -CONT "$pid"
wait_for 15 rd 70 || { show_log "$TMP/mnt.log"; fail "no read within 15 s of SIGCONT"; }
cmp "$TMP/out" <(dd if="$TMP/disk.img" bs=64k count=1 skip=70 status=none) || fail "bytes differ after SIGCONT"
echo "ok: the entry reads again once the server runs"
nd_unmount "$TMP/mnt"

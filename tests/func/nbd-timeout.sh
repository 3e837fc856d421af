#!/bin/bash
# A server that stops answering (SIGSTOP) cannot hang the mount: the
# request runs out of `timeout`, reconnecting is bounded too, and the read
# fails with EIO within timeout + reconnect-delay + 3 s. Once the server
# runs again, the same entry reads the right bytes.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 8
nbdkit_tcp s 127.0.0.1 file "$TMP/disk.img"
echo "s nbd://127.0.0.1:$(nbdkit_port s)/  timeout=1,reconnect-delay=2,readahead=0" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"
rd() { dd if="$TMP/mnt/s" of="$TMP/out" bs=64k count=1 skip="$1" iflag=direct status=none; }
rd 0 || fail "first read failed"

pid=$(nbdkit_pid s)
kill -STOP "$pid"
cleanup_fn "kill -CONT $pid 2>/dev/null"
start=$(date +%s%N)
if timeout 30 dd if="$TMP/mnt/s" of=/dev/null bs=64k count=1 skip=50 iflag=direct status=none 2>"$TMP/err"; then
    kill -CONT "$pid"
    fail "a read from a stopped server succeeded"
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "$pid"
grep -q "Input/output error" "$TMP/err" || { cat "$TMP/err"; show_log "$TMP/mnt.log"; fail "the read did not fail with EIO"; }
[ $ms -le 6000 ] || fail "the read took $ms ms to fail (bound: 6000 ms)"
grep -q "no reply from the server in 1 s" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "the log does not say why"; }
echo "ok: stopped server: EIO after $ms ms"

wait_for 10 rd 50 || { show_log "$TMP/mnt.log"; fail "read after SIGCONT failed"; }
cmp "$TMP/out" <(dd if="$TMP/disk.img" bs=64k count=1 skip=50 status=none) || fail "bytes differ after SIGCONT"
echo "ok: the entry reads again once the server runs"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt"

#!/bin/bash
# A server that stops answering: nginx frozen with SIGSTOP (connections
# are accepted by the kernel, nothing is ever sent back). A read fails with
# EIO within reconnect-delay plus a few timeouts, the daemon and its status
# file stay responsive, and once nginx runs again the same entry reads the
# right bytes. An entry whose server accepts and never answers fails at
# mount within its timeout and does not hold the other entries up. The
# same for FTP with vsftpd and its sessions frozen mid-stream.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/vsftpd.sh"
requires python3

nginx_start
pattern "$NGINX_ROOT/disk.img" 16

# A listener that never accepts or answers.
silent=$(free_port)
python3 - "$silent" "$TMP/silent.ready" <<'PY' >"$TMP/silent.log" 2>&1 &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
open(sys.argv[2], "w").close()
time.sleep(300)
PY
silentpid=$!
cleanup_fn "kill $silentpid 2>/dev/null"
wait_for 10 test -e "$TMP/silent.ready" || { show_log "$TMP/silent.log"; fail "the silent listener did not start"; }

cat > "$TMP/tab" <<TAB
stall   $NGINX_URL/disk.img  timeout=1,reconnect-delay=3
silent  http://127.0.0.1:$silent/disk.img  timeout=1
TAB
start=$(date +%s%N)
nd_mount "$TMP/tab" "$TMP/mnt"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ -e "$TMP/mnt/silent" ] && fail "an entry whose server never answers was mounted"
grep "entry 'silent'" "$TMP/mnt.log" | grep -Eqi "timed out|too slow|timeout" ||
    { show_log "$TMP/mnt.log"; fail "no timeout error for the silent server"; }
[ $ms -le 15000 ] || fail "mounting took $ms ms with a silent server (bound 15000 ms)"
echo "ok: silent server refused at mount after $ms ms: $(grep "entry 'silent'" "$TMP/mnt.log" | head -n 1)"

F=$TMP/mnt/stall
dd if="$F" of="$TMP/first" bs=64k count=4 iflag=direct status=none || fail "first read failed"
cmp "$TMP/first" <(head -c 262144 "$NGINX_ROOT/disk.img") || fail "first read differs"

workers=$(echo $(nginx_workers))
[ -n "$workers" ] || fail "no nginx workers found"
kill -STOP "$NGINX_PID" $workers
cleanup_fn "kill -CONT $NGINX_PID $workers 2>/dev/null"
echo "nginx stopped (SIGSTOP master $NGINX_PID, workers $(echo $workers))"

# reconnect-delay 3 + connect/first-byte timeouts of 1 s: bound 9 s.
expect_eio 9000 "$TMP/mnt.log" "stopped HTTP server" "$F" 200
echo "ok: stopped server: EIO after $EIO_MS ms"

kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
timeout 10 cat "$TMP/mnt/.netdiskfs/status" >/dev/null || fail "the status file hangs"
timeout 10 ls -l "$TMP/mnt" >/dev/null || fail "ls of the mount hangs"
echo "ok: daemon alive and answering while the server is stopped"

kill -CONT "$NGINX_PID" $workers
dd if="$F" of="$TMP/again" bs=64k count=4 skip=200 iflag=direct status=none ||
    { show_log "$TMP/mnt.log"; fail "read after nginx resumed failed"; }
cmp "$TMP/again" <(dd if="$NGINX_ROOT/disk.img" bs=64k count=4 skip=200 status=none) || fail "bytes differ after resume"
cmp "$F" "$NGINX_ROOT/disk.img" || fail "the whole file differs after resume"
echo "ok: nginx resumed: reads work and match"
nd_unmount "$TMP/mnt"

# FTP: vsftpd and its sessions frozen in the middle of a stream.
vsftpd_start plain
cp "$NGINX_ROOT/disk.img" "$FTP_ROOT/disk.img"
echo "ftp $FTP_URL/disk.img  username=$FTP_USER,password-file=$FTP_PASSFILE,timeout=1,reconnect-delay=3" > "$TMP/tab2"
chmod 600 "$TMP/tab2"
nd_mount "$TMP/tab2" "$TMP/mnt2"
F=$TMP/mnt2/ftp
dd if="$F" of="$TMP/first" bs=64k count=4 iflag=direct status=none || fail "first FTP read failed"
cmp "$TMP/first" <(head -c 262144 "$NGINX_ROOT/disk.img") || fail "first FTP read differs"
ftppids=$(echo $(_vsftpd_tree "$(cat "$FTP_DIR/vsftpd-$FTP_N.pid")"))
kill -STOP $ftppids
cleanup_fn "kill -CONT $ftppids 2>/dev/null"
expect_eio 9000 "$TMP/mnt2.log" "stopped FTP server" "$F" 100
echo "ok: stopped FTP server: EIO after $EIO_MS ms"
kill -0 "$(cat "$TMP/mnt2.pid")" || fail "the daemon died"
kill -CONT $ftppids
# Past reconnect-delay the entry is failed: it serves again once its
# reconnect thread gets through (within seconds), not on the next request.
wait_for 10 dd if="$F" of="$TMP/again" bs=64k count=4 skip=100 iflag=direct status=none ||
    { show_log "$TMP/mnt2.log"; fail "FTP read after vsftpd resumed failed"; }
cmp "$TMP/again" <(dd if="$NGINX_ROOT/disk.img" bs=64k count=4 skip=100 status=none) || fail "FTP bytes differ after resume"
cmp "$F" "$NGINX_ROOT/disk.img" || fail "the whole FTP file differs after resume"
echo "ok: vsftpd resumed: FTP reads work and match"
nd_unmount "$TMP/mnt2"

#!/bin/bash
# nginx is stopped (SIGTERM: connections cut) in the middle of a copy and
# started again on the same ports a second later: the copy completes, with
# the checksum of the served file, and the log tells of the lost
# connection. The same over FTP with vsftpd and all its sessions killed.
. "$(dirname "$0")/../lib/functions.sh"
NGINX_REQ_RATE=16
. "$TOP/tests/lib/nginx.sh"
VSFTPD_EXTRA=local_max_rate=8000000
. "$TOP/tests/lib/vsftpd.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 32
# /slow/: 16 requests a second, and a 4 MiB cache bounds how much one
# request may fetch, so the copy lasts a few seconds.
echo "slow $NGINX_URL/slow/disk.img  reconnect-delay=15,timeout=2,cache-size=4M" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"

dd if="$TMP/mnt/slow" of="$TMP/copy" bs=1M status=none 2>"$TMP/dd.err" &
ddpid=$!
sleep 1
kill -0 $ddpid 2>/dev/null || fail "the copy finished before nginx was stopped (too fast to test)"
nginx_stop
echo "nginx stopped in the middle of the copy ($(stat -c %s "$TMP/copy") bytes copied)"
sleep 1
kill -0 $ddpid 2>/dev/null || { cat "$TMP/dd.err"; fail "the copy ended while nginx was down"; }
nginx_start
wait $ddpid || { cat "$TMP/dd.err"; show_log "$TMP/mnt.log"; fail "the copy failed across the restart"; }
a=$(sha256sum < "$TMP/copy") b=$(sha256sum < "$NGINX_ROOT/disk.img")
[ "$a" = "$b" ] || fail "the copy's checksum differs from the served file's"
grep -qi "connection lost" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "the log does not tell of the lost connection"; }
echo "ok: copy survived the restart, sha256 ${a:0:16} = served file"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt"

# FTP: vsftpd at 8 MB/s a session, killed with all its sessions mid-copy.
vsftpd_start plain
cp "$NGINX_ROOT/disk.img" "$FTP_ROOT/disk.img"
echo "ftp $FTP_URL/disk.img  username=$FTP_USER,password-file=$FTP_PASSFILE,reconnect-delay=15,timeout=2" > "$TMP/tab2"
chmod 600 "$TMP/tab2"
nd_mount "$TMP/tab2" "$TMP/mnt2"
rm -f "$TMP/copy"
dd if="$TMP/mnt2/ftp" of="$TMP/copy" bs=1M status=none 2>"$TMP/dd.err" &
ddpid=$!
sleep 1
kill -0 $ddpid 2>/dev/null || fail "the FTP copy finished before vsftpd was killed (too fast to test)"
vsftpd_kill $FTP_N
echo "vsftpd killed in the middle of the copy ($(stat -c %s "$TMP/copy") bytes copied)"
sleep 1
kill -0 $ddpid 2>/dev/null || { cat "$TMP/dd.err"; fail "the FTP copy ended while vsftpd was down"; }
vsftpd_restart $FTP_N
wait $ddpid || { cat "$TMP/dd.err"; show_log "$TMP/mnt2.log"; fail "the FTP copy failed across the restart"; }
a=$(sha256sum < "$TMP/copy")
[ "$a" = "$b" ] || fail "the FTP copy's checksum differs from the served file's"
echo "ok: FTP copy survived the restart, sha256 ${a:0:16} = served file"
kill -0 "$(cat "$TMP/mnt2.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt2"

#!/bin/bash
# cache-writeback-dead.sh: cache=writeback against a server that died with
# 20 dirty blocks: fsync fails with EIO within reconnect-delay + timeout
# (not once per block); at unmount the daemon exits within the same bound,
# saves what it could not write to a recovery file and names it and the
# byte count in its log; `netdiskfs recover FILE SOURCE` writes it back
# once the server is up again, refusing another disk.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "SKIP: python3 not installed" >&2; exit 77; }

pattern "$TMP/disk.img" 8
cp "$TMP/disk.img" "$TMP/expect.img"
nbdkit_unix d file "$TMP/disk.img"
SRC="nbd+unix:///?socket=$(nbdkit_sock d)"
echo "d $SRC cache=writeback,reconnect-delay=2,timeout=1,recovery-dir=$TMP/rec" > "$TMP/t.tab"
# What systemd (Type=notify) would hear: its stop timeout must grow to
# the final write-back's bound, 10 s + 2 x (reconnect-delay + timeout).
"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(60)
with open(sys.argv[2], "a") as f:
    while True:
        try: f.write(s.recv(4096).decode() + "\n"); f.flush()
        except socket.timeout: break
' "$TMP/notify.sock" "$TMP/notify.log" &
cleanup_fn "kill $! 2>/dev/null"
wait_for 5 test -S "$TMP/notify.sock" || fail "no notify socket"
NOTIFY_SOCKET=$TMP/notify.sock nd_mount "$TMP/t.tab" "$TMP/m"

head -c $((20 * 65536)) /dev/urandom > "$TMP/new"
for i in $(seq 0 19); do
    dd if="$TMP/new" of="$TMP/expect.img" bs=65536 skip=$i seek=$((i * 6)) count=1 conv=notrunc status=none
done
# One open file: 20 blocks written (no fsync, no close: they stay dirty),
# the server killed, then fsync (timed) and close.
cat > "$TMP/w.py" <<'EOF'
import os, sys, time, subprocess
fd = os.open(sys.argv[1], os.O_RDWR)
new = open(sys.argv[2], "rb").read()
for i in range(20):
    os.pwrite(fd, new[i * 65536:(i + 1) * 65536], i * 6 * 65536)
subprocess.run(["kill", "-9", sys.argv[3]], check=True)
start = time.monotonic()
try:
    os.fsync(fd)
    print("fsync succeeded")
    sys.exit(1)
except OSError as e:
    print("fsync %s after %d ms" % (e.strerror, (time.monotonic() - start) * 1000))
os.close(fd)
EOF
"$PY" "$TMP/w.py" "$TMP/m/d" "$TMP/new" "$(nbdkit_pid d)" > "$TMP/w.out" || { cat "$TMP/w.out"; fail "the writer"; }
cat "$TMP/w.out"
grep -q "^fsync Input/output error" "$TMP/w.out" || fail "fsync did not fail with EIO"
ms=$(awk '{print $(NF-1)}' "$TMP/w.out")
[ "$ms" -le 8000 ] || fail "fsync took $ms ms to fail (bound 8000: reconnect-delay 2 + timeout 1 + slack)"
# FUSE's release runs after close(2) has returned: wait for its log line.
wait_for 10 grep -q "entry 'd': flush at the last close failed" "$TMP/m.log" ||
    { cat "$TMP/m.log"; fail "a failed flush at the last close is not logged"; }

pid=$(cat "$TMP/m.pid")
start=$(date +%s%N)
fusermount3 -u "$TMP/m" || fail "unmount"
wait_for 12 sh -c "! kill -0 $pid" || fail "the daemon did not exit within 12 s of the unmount"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
rec=$(ls "$TMP"/rec/d-*.ndrec 2>/dev/null | head -n1)
[ -n "$rec" ] || { cat "$TMP/m.log"; fail "no recovery file"; }
grep -q "1310720 bytes could not be written to the server; saved to $rec" "$TMP/m.log" ||
    { cat "$TMP/m.log"; fail "the log does not name the file and the byte count"; }
[ "$(stat -c %a "$rec")" = 600 ] || fail "the recovery file is readable by others"
grep -q "^EXTEND_TIMEOUT_USEC=16000000$" "$TMP/notify.log" ||
    { cat "$TMP/notify.log"; fail "systemd's stop timeout was not extended to the write-back's bound"; }

nbdkit_restart d
head -c 8M /dev/zero > "$TMP/other.img"
nbdkit_unix o file "$TMP/other.img"
"$ND" recover "$rec" "nbd+unix:///?socket=$(nbdkit_sock o)" 2>"$TMP/rec.err" &&
    fail "recover wrote to another disk"
grep -q "was made for" "$TMP/rec.err" || { cat "$TMP/rec.err"; fail "no clear refusal"; }
"$ND" recover "$rec" "$SRC" || fail "recover"
cmp "$TMP/disk.img" "$TMP/expect.img" || fail "after recover the server's bytes differ"
[ ! -e "$rec" ] || fail "the recovery file is still there"
echo "fsync failed within the bound; unmount took ${ms} ms and saved 1310720 bytes; recover wrote them back"

#!/bin/bash
# ssh-io.sh: random-offset reads and writes of random lengths through the
# mount, byte-compared with a reference copy, with the server's file, and
# read back; an odd-sized image (size = the remote file's size); fsync
# reaches the server (fsync@openssh.com in the sftp-server's log); ro=on
# refuses writes. The server re-keys every 4 MiB throughout.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "SKIP: python3 not installed" >&2; exit 77; }
SFTP_SERVER=/usr/lib/openssh/sftp-server
[ -x $SFTP_SERVER ] || { echo "SKIP: $SFTP_SERVER not installed" >&2; exit 77; }

sshd_setup
# The real sftp-server, logging every request to a file.
SFTP_LOG=$SSHD_DIR/sftp.log
printf '#!/bin/sh\nexec %s -e -l VERBOSE 2>>%s\n' "$SFTP_SERVER" "$SFTP_LOG" > "$SSHD_DIR/sftp-logged"
chmod 755 "$SSHD_DIR/sftp-logged"
: > "$SFTP_LOG"
# A small RekeyLimit: the server re-keys every few MiB, in the middle of
# pipelined reads.
sshd_start "Subsystem sftp $SSHD_DIR/sftp-logged" "RekeyLimit 4M"
agent_start

A=$TMP/a.img B=$TMP/b.img
head -c $(( 8 * 1048576 + 1234 )) /dev/urandom > "$A"
pattern "$B" 16
cp "$A" "$TMP/a.ref"
cp "$B" "$TMP/b.ref"
cat > "$TMP/io.tab" <<EOF
a   ssh://127.0.0.1:$SSHD_PORT$A  known-hosts=$SSHD_KNOWN_HOSTS,cache=none
b   ssh://[::1]:$SSHD_PORT$B      known-hosts=$SSHD_KNOWN_HOSTS,connections=2
bro ssh://127.0.0.1:$SSHD_PORT$B  known-hosts=$SSHD_KNOWN_HOSTS,ro=on
EOF
nd_mount "$TMP/io.tab" "$TMP/m"
[ "$(stat -c %s "$TMP/m/a")" = $(( 8 * 1048576 + 1234 )) ] || fail "a: size $(stat -c %s "$TMP/m/a")"
[ "$(stat -c %s "$TMP/m/b")" = $(( 16 * 1048576 )) ] || fail "b: wrong size"

# random_io MOUNTED REFERENCE SEED: 300 reads, 200 writes, 300 reads.
cat > "$TMP/rio.py" <<'EOF'
import os, random, sys
mnt, ref, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
size = os.path.getsize(ref)
fm = os.open(mnt, os.O_RDWR)
fr = os.open(ref, os.O_RDWR)
def span():
    off = rnd.randrange(size)
    n = rnd.choice([1, 511, 512, 4096, 65536, 65537, 300000, 1048576 + 3])
    return off, min(n, size - off)
def check(what, off, n):
    a, b = os.pread(fm, n, off), os.pread(fr, n, off)
    if a != b:
        sys.exit("%s: %d bytes at %d differ (got %d bytes)" % (what, n, off, len(a)))
for _ in range(300):
    check("read", *span())
check("tail", size - 100, 100)
for _ in range(200):
    off, n = span()
    data = os.urandom(n)
    if os.pwrite(fm, data, off) != n:
        sys.exit("short write at %d" % off)
    os.pwrite(fr, data, off)
    if rnd.random() < 0.3:
        check("read-back", off, n)
for _ in range(300):
    check("re-read", *span())
os.fsync(fm)
os.close(fm)
os.close(fr)
EOF
"$PY" "$TMP/rio.py" "$TMP/m/a" "$TMP/a.ref" 1 || fail "random I/O on a (cache=none)"
"$PY" "$TMP/rio.py" "$TMP/m/b" "$TMP/b.ref" 2 || fail "random I/O on b (cached, IPv6)"
cmp "$TMP/m/a" "$TMP/a.ref" || fail "a: mount differs from the reference"
cmp "$A" "$TMP/a.ref" || fail "a: the server's file differs from the reference"
cmp "$B" "$TMP/b.ref" || fail "b: the server's file differs from the reference"

# fsync reaches the server: none logged while a write sits unsynced, one
# (at least) after fsync().
n0=$(grep -c '^fsync ' "$SFTP_LOG")
"$PY" - "$TMP/m/b" "$SFTP_LOG" <<'EOF' || fail "fsync test"
import os, sys, time
mnt, log = sys.argv[1], sys.argv[2]
count = lambda: sum(1 for l in open(log) if l.startswith("fsync "))
fd = os.open(mnt, os.O_RDWR)
os.pwrite(fd, b"fsync-test" * 100, 12345)
time.sleep(0.3)
before = count()
os.fsync(fd)
after = count()
os.close(fd)
if after <= before:
    sys.exit("fsync did not reach the server (%d before, %d after)" % (before, after))
EOF
[ "$(grep -c '^fsync ' "$SFTP_LOG")" -gt "$n0" ] || fail "no fsync in the sftp-server log"
printf 'fsync-test%.0s' $(seq 100) | cmp - <(dd if="$B" bs=1 skip=12345 count=1000 2>/dev/null) ||
    fail "the fsync'ed write is not in the server's file"
grep -q "^open \"$B\" flags READ,WRITE" "$SFTP_LOG" || fail "b was not opened read-write"

# ro=on: opened read-only on the server, writes refused, file unchanged.
sum=$(sha256sum < "$B")
case $(stat -c %A "$TMP/m/bro") in -r--*) ;; *) fail "ro=on shows mode $(stat -c %A "$TMP/m/bro")" ;; esac
dd if=/dev/zero of="$TMP/m/bro" bs=4k count=1 conv=notrunc 2>/dev/null && fail "write to ro=on succeeded"
cmp "$TMP/m/bro" "$B" || fail "bro: differs from the remote file"
[ "$(sha256sum < "$B")" = "$sum" ] || fail "ro=on: the server's file changed"
grep -q "^open \"$B\" flags READ mode" "$SFTP_LOG" || { show_log "$SFTP_LOG"; fail "ro=on did not open read-only"; }
nd_unmount "$TMP/m"
echo "ok: random reads/writes byte-exact (cache=none and cached, IPv4 and IPv6), fsync reaches the server, ro=on"

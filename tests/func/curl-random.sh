#!/bin/bash
# Random-offset reads of many sizes (1 byte to 3 MiB, on and across the
# 512-byte, block and readahead boundaries, up to the last byte) through
# HTTP entries with different block sizes, readahead and caching, and
# through FTP, match the served file byte for byte. Several readers at
# once, too.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/vsftpd.sh"
requires python3

nginx_start
vsftpd_start plain
# 20 MiB + 12345 bytes: the end is not block aligned.
pattern "$NGINX_ROOT/disk.img" 20
head -c 12345 /dev/urandom >> "$NGINX_ROOT/disk.img"
cp "$NGINX_ROOT/disk.img" "$FTP_ROOT/disk.img"
U=$NGINX_URL/disk.img
F="$FTP_URL/disk.img  username=$FTP_USER,password-file=$FTP_PASSFILE"

cat > "$TMP/tab" <<TAB
h          $U
h4k        $U  block-size=4k,readahead=16k
hbig       $U  block-size=1M,readahead=4M,connections=8
hnocache   $U  cache=none,readahead=0
f          $F
fnocache   $F,cache=none,block-size=16k
TAB
chmod 600 "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"

cat > "$TMP/rr.py" <<'PY'
import os, random, sys, threading
path, ref, n, threads, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
want = open(ref, "rb").read()
size = len(want)
sizes = [1, 2, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537,
         131072, 262143, 262144, 262145, 1048576, 1048577, 3 << 20]
bounds = [512, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20]
errors = []
def worker(k):
    rnd = random.Random(seed * 100 + k)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i in range(n):
            ln = rnd.choice(sizes)
            r = rnd.random()
            if r < 0.4:    # straddle a boundary
                b = rnd.choice(bounds)
                off = rnd.randrange(1, size // b) * b - rnd.randrange(0, min(ln, b))
            elif r < 0.5:  # the very end
                off = size - rnd.randrange(1, min(ln, size) + 1)
            else:
                off = rnd.randrange(0, size)
            off = max(0, off)
            got = os.pread(fd, ln, off)
            exp = want[off:off + ln]
            if got != exp:
                errors.append("%s: %d bytes at %d: got %d bytes, differ" % (path, ln, off, len(got)))
                return
    finally:
        os.close(fd)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
if errors:
    sys.exit("\n".join(errors))
print("ok: %s: %d random reads x %d threads match" % (os.path.basename(path), n, threads))
PY

rr() { local t0=$(date +%s%N); python3 "$TMP/rr.py" "$TMP/mnt/$1" "$NGINX_ROOT/disk.img" "$2" "$3" "$4" ||
        { show_log "$TMP/mnt.log"; fail "random reads of $1 differ"; }; echo "   ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"; }
rr h 400 1 1
rr h4k 400 1 2
rr hbig 200 4 3
rr hnocache 300 4 4
rr f 120 1 5
rr fnocache 60 3 6
# Whole-file reads after all that.
for e in h hnocache f; do
    cmp "$TMP/mnt/$e" "$NGINX_ROOT/disk.img" || fail "$e differs after the random reads"
done
echo "ok: whole files still match"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt"

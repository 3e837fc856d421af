#!/bin/bash
# The GlusterFS backend against a real glusterd on loopback, all in one
# script because glusterd start-up and glfs_fini (~10 s) are slow: one
# glusterd, one volume, one mount with an entry per URL form.
#  - tcp URI, unix-socket URI, +rdma (served over tcp), JSON server list
#    whose first server is a closed port, server lists whose live server
#    has another transport than the dead first one (tcp then unix, unix
#    then tcp), dotted file.* keys under qcow2,
#    QEMU's json qcow2 wrapper (those two over a real qcow2 image: the
#    mount shows the disk inside it): each reads back the brick's bytes;
#  - entries with the same volume and server list share one glfs_t;
#  - random-offset writes and reads, byte-exact against the brick after
#    fsync; punch hole and zero range read back zeroes; ro=on refuses writes;
#  - debug=9,logfile=PATH writes libgfapi's trace log to PATH;
#  - a failed fsync (volume made read-only under acknowledged writes) is
#    reported and the file refuses writes from then on;
#  - a stopped brick fails a read within a bound, the mount recovers;
#  - unmount does not wait for each glfs_fini in turn.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/glusterd.sh"
requires python3
requires fallocate
gluster_lsan_suppress

VOL=ndt$$
glusterd_start "$TMP/gd"
glusterd_volume $VOL
B=$GD_BRICK
S=$GD_SOCK
CLOSED=$(free_port)

# A one-brick volume finds files put straight into its brick by name (they
# get their gfid on first lookup), so the images are made in place.
NAMES="tcp unix rdma json mixed mixed2 dotted qcow2 logged ro sync"
for n in $NAMES; do
    pattern "$B/$n.img" 4
    cp "$B/$n.img" "$TMP/$n.orig"
done
# The qcow2 forms (the QEMU document's own examples) hold a real qcow2
# image: the mount shows the disk inside it.
for n in dotted qcow2; do
    qemu-img convert -q -f raw -O qcow2 "$TMP/$n.orig" "$B/$n.img" || fail "qemu-img convert $n"
done
pattern "$B/fault.img" 16 # read only at the end, far from any readahead
BPID=$(head -n 1 "$GD_DIR/bricks.pids")

cat > "$TMP/tab" <<EOF
tcp     gluster://127.0.0.1/$VOL/tcp.img
unix    gluster+unix:///$VOL/unix.img?socket=$S
rdma    gluster+rdma://127.0.0.1:24007/$VOL/rdma.img
json    json:{"driver":"gluster","volume":"$VOL","path":"json.img","server":[{"type":"tcp","host":"127.0.0.1","port":$CLOSED},{"type":"tcp","host":"127.0.0.1","port":24007}]}
mixed   json:{"driver":"gluster","volume":"$VOL","path":"mixed.img","server":[{"type":"tcp","host":"127.0.0.1","port":$CLOSED},{"type":"unix","socket":"$S"}]}
mixed2  json:{"driver":"gluster","volume":"$VOL","path":"mixed2.img","server":[{"type":"unix","socket":"$TMP/no.socket"},{"type":"tcp","host":"127.0.0.1","port":24007}]}
dotted  driver=qcow2,file.driver=gluster,file.volume=$VOL,file.path=/dotted.img,file.server.0.type=tcp,file.server.0.host=127.0.0.1,file.server.0.port=24007,file.server.1.type=unix,file.server.1.socket=$S
qcow2   json:{"driver":"qcow2","file":{"driver":"gluster","volume":"$VOL","path":"qcow2.img","server":[{"type":"unix","socket":"$S"}]}}
logged  gluster://127.0.0.1/$VOL/logged.img  debug=9,logfile=$TMP/gfapi.log
ro      gluster://127.0.0.1/$VOL/ro.img  ro=on
sync    gluster://127.0.0.1/$VOL/sync.img
fault   gluster://localhost/$VOL/fault.img  timeout=2,reconnect-delay=2
EOF
nd_mount "$TMP/tab" "$TMP/mnt" ${GLUSTER_TEST_DEBUG:+-d}
M=$TMP/mnt
NDPID=$(cat "$M.pid")

# Every form reads back the file in the brick.
for n in $NAMES; do
    want=$B/$n.img
    case $n in dotted|qcow2) want=$TMP/$n.orig ;; esac
    cmp "$M/$n" "$want" || { show_log "$M.log"; fail "$n: the mount reads other bytes than the brick"; }
done
grep -q "rdma transport is gone" "$M.log" || { show_log "$M.log"; fail "no warning that rdma is served over tcp"; }
echo "ok: tcp, unix, rdma, json (first server closed), mixed transports (first server dead), dotted and qcow2 forms read the brick's bytes"

# Sharing: one glfs_t (so one connection to the brick) per distinct
# volume + server list + logging: tcp/rdma/ro, unix/qcow2, json, mixed,
# mixed2, dotted, logged, fault = 8 for 12 entries.
BPORT=$(ss -Hltnp | awk -v p="pid=$BPID," 'index($0, p) { sub(/.*:/, "", $4); print $4; exit }')
[ -n "$BPORT" ] || fail "cannot find the brick's port"
conns=$(ss -Htnp state established "( dport = :$BPORT )" | grep -c "pid=$NDPID,")
[ "$conns" -eq 8 ] || { ss -Htnp state established "( dport = :$BPORT )" >&2; fail "expected 8 glfs_t connected to the brick, found $conns"; }
echo "ok: 12 entries share 8 glfs_t"

# Random-offset writes (unaligned, up to 200 KB) and reads; after fsync the
# brick holds exactly the expected bytes.
cp "$TMP/tcp.orig" "$TMP/tcp.expect"
python3 - "$M/tcp" "$TMP/tcp.expect" "$B/tcp.img" <<'EOF' || { show_log "$M.log"; fail "random-offset I/O"; }
import os, random, sys
mnt, expect, brick = sys.argv[1:4]
rnd = random.Random(20261124)
fm = os.open(mnt, os.O_RDWR)
fe = os.open(expect, os.O_RDWR)
size = os.fstat(fm).st_size
for _ in range(300):
    n = rnd.randint(1, 200000)
    off = rnd.randint(0, size - n)
    data = rnd.randbytes(n)
    if os.pwrite(fm, data, off) != n:
        sys.exit(f"short write at {off}+{n}")
    os.pwrite(fe, data, off)
    if rnd.random() < 0.3:
        off = rnd.randint(0, size - n)
        if os.pread(fm, n, off) != os.pread(fe, n, off):
            sys.exit(f"read after write differs at {off}+{n}")
os.fsync(fm)
fb = os.open(brick, os.O_RDONLY)
for _ in range(300):
    n = rnd.randint(1, 300000)
    off = rnd.randint(0, size - n)
    want = os.pread(fe, n, off)
    if os.pread(fb, n, off) != want:
        sys.exit(f"brick differs after fsync at {off}+{n}")
    if os.pread(fm, n, off) != want:
        sys.exit(f"mount differs at {off}+{n}")
EOF
cmp "$B/tcp.img" "$TMP/tcp.expect" || fail "brick file differs after random writes + fsync"
cmp "$M/tcp" "$TMP/tcp.expect" || fail "mount differs after random writes + fsync"
echo "ok: 300 random-offset writes and 600 reads byte-exact; fsync put them in the brick"

# Random reads of an entry nothing wrote: straight from the brick.
python3 - "$M/unix" "$B/unix.img" <<'EOF' || fail "random reads of the unix entry"
import os, random, sys
fm, fb = os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_RDONLY)
size, rnd = os.fstat(fb).st_size, random.Random(7)
for _ in range(500):
    n = rnd.randint(1, 100000)
    off = rnd.randint(0, size - n)
    if os.pread(fm, n, off) != os.pread(fb, n, off):
        sys.exit(f"differs at {off}+{n}")
EOF
echo "ok: 500 random reads over the unix socket entry"

# Punch hole -> glfs_discard, zero range -> glfs_zerofill: zeroes in the
# mount and in the brick, size unchanged.
size0=$(stat -c %s "$M/tcp")
fallocate -p -o $((1 << 20)) -l $((1 << 20)) "$M/tcp" || { show_log "$M.log"; fail "punch hole through the mount failed"; }
dd if=/dev/zero of="$TMP/tcp.expect" bs=64k seek=16 count=16 conv=notrunc status=none
fallocate -z -o $((3 << 20)) -l 100000 "$M/tcp" || { show_log "$M.log"; fail "zero range through the mount failed"; }
dd if=/dev/zero of="$TMP/tcp.expect" bs=100000 count=1 oflag=seek_bytes seek=$((3 << 20)) \
    conv=notrunc status=none
python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$M/tcp" || fail "fsync failed"
[ "$(stat -c %s "$M/tcp")" = "$size0" ] || fail "punch hole changed the size"
cmp "$M/tcp" "$TMP/tcp.expect" || fail "holes do not read back as zeroes through the mount"
cmp "$B/tcp.img" "$TMP/tcp.expect" || fail "holes are not zeroes in the brick"
echo "ok: punch hole and zero range read back zeroes (mount and brick)"

# ro=on: writes refused, brick unchanged.
if printf 'x' | dd of="$M/ro" bs=1 seek=10 conv=notrunc status=none 2>/dev/null; then
    fail "a write to the ro=on entry succeeded"
fi
cmp "$B/ro.img" "$TMP/ro.orig" || fail "the ro entry's file changed"
echo "ok: ro=on refuses writes"

# debug=9,logfile=PATH: libgfapi's trace-level log went to PATH.
[ -s "$TMP/gfapi.log" ] || fail "debug=9,logfile=: $TMP/gfapi.log is empty or missing"
grep -q '\] T \[' "$TMP/gfapi.log" || { tail -n 20 "$TMP/gfapi.log" >&2; fail "no trace (level 9) lines in the logfile"; }
grep -q "$VOL" "$TMP/gfapi.log" || fail "the logfile does not mention the volume"
echo "ok: debug=9,logfile= wrote $(wc -l < "$TMP/gfapi.log") lines of libgfapi's trace log"

# A write the brick refuses (the volume made read-only) fails at once:
# files are opened O_DSYNC, so write-behind never acknowledges a write the
# brick does not have. Once the volume is writable again, writes work.
glusterd_set $VOL features.read-only on
python3 - "$M/sync" <<'EOF' || { show_log "$M.log"; fail "a refused write"; }
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.pwrite(fd, b"a" * 4096, 8192)
    os.fsync(fd)
except OSError as e:
    print(f"ok: a write to a read-only volume failed: {e.strerror}")
else:
    sys.exit("the write succeeded although the brick refused it")
EOF
cmp "$B/sync.img" "$TMP/sync.orig" || fail "the refused write reached the brick"
glusterd_set $VOL features.read-only off
cp "$TMP/sync.orig" "$TMP/sync.expect"
printf 'b%.0s' $(seq 1 4096) > "$TMP/b4k"
wait_for 10 dd if="$TMP/b4k" of="$M/sync" bs=4096 seek=16 conv=notrunc,fsync status=none ||
    { show_log "$M.log"; fail "writes after the volume is writable again"; }
dd if="$TMP/b4k" of="$TMP/sync.expect" bs=4096 seek=16 conv=notrunc status=none
cmp "$B/sync.img" "$TMP/sync.expect" || fail "the brick does not hold the write"
echo "ok: a refused write fails at once; writes work again once the volume allows them"

# A stopped brick: a read that misses every cache fails within a bound
# (timeout=2, reconnect-delay=2), the mount stays up, and reads work again
# once the brick runs.
kill -STOP "$BPID"
cleanup_fn "kill -CONT $BPID 2>/dev/null"
t0=$(date +%s)
if timeout 60 dd if="$M/fault" of=/dev/null bs=64k skip=192 count=1 status=none 2>/dev/null; then
    kill -CONT "$BPID"
    fail "a read from a stopped brick succeeded"
fi
secs=$(( $(date +%s) - t0 ))
kill -CONT "$BPID"
[ $secs -le 20 ] || fail "a read from a stopped brick took $secs s (bound 20 s)"
echo "ok: read from a stopped brick failed after $secs s"
mountpoint -q "$M" || fail "the mount died"
end=$((SECONDS + 30))
until timeout 30 cmp "$M/fault" "$B/fault.img" 2>/dev/null; do
    ((SECONDS < end)) || { [ -n "${GLUSTER_TEST_DEBUG:-}" ] && cp "$M.log" /tmp/gx/fail.log; show_log "$M.log"; fail "no recovery within 30 s after the brick resumed"; }
    sleep 0.5
done
echo "ok: recovered after the brick resumed"

# Unmount: the glfs_fini calls (~10 s each) run in parallel, so eight glfs_t
# fit in nd_unmount's 20 s bound.
t0=$(date +%s)
nd_unmount "$M"
echo "ok: unmount with 8 glfs_t took $(( $(date +%s) - t0 )) s"

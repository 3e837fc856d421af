# ceph.sh: a one-node Ceph cluster (one monitor, one OSD, no mgr) on
# 127.0.0.1 for the RBD backend's tests. Source it after functions.sh.
#
#   ceph_start [memstore|bluestore] [none|cephx]   cluster in $CEPH_DIR, pool rbd
#   ceph_osd_kill / ceph_osd_start                  fault injection (bluestore
#                                                   keeps its data; memstore not)
#   ceph_rbd ARGS... / ceph_cli ARGS...             rbd / ceph, bounded by timeout
#   rbd_lsan_suppress                              LeakSanitizer ignores librbd's own
#                                                   request objects (see below)
#
# The monitor binds the fixed ports 3300 and 6789 (and the OSD 6800-6807):
# two clusters on one host clash, so a test waits (bounded) for a running
# one to go. Daemons are stopped by the PIDs in their pidfiles at exit.
# $CEPH_CONF points the Ceph tools at the cluster; $CEPH_BLOCK_BYTES sizes
# the OSD's (sparse) bluestore file, 1 GiB by default. The demo runs these in a
# subshell with its own CEPH_DIR (demo/parts/rbd.sh).

requires ceph-mon
requires ceph-osd
requires rbd

CEPH_DIR=${CEPH_DIR:-$TMP/ceph}
export CEPH_CONF=$CEPH_DIR/ceph.conf

ceph_cli() { timeout 20 ceph --connect-timeout 10 "$@"; }
ceph_rbd() { timeout 60 rbd "$@"; }

_ceph_conf() {
    local store=$1 auth=$2
    cat > "$CEPH_CONF" <<EOF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon host = 127.0.0.1
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
keyring = $CEPH_DIR/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
auth allow insecure global id reclaim = false
osd crush chooseleaf type = 0
run dir = $CEPH_DIR/run
pid file = $CEPH_DIR/run/\$name.pid
admin socket = $CEPH_DIR/run/\$name.asok
log file = $CEPH_DIR/log/\$name.log
[client]
log file = /dev/null
admin socket =
[mon.a]
mon data = $CEPH_DIR/mon
mon data avail crit = 0
mon cluster log file = $CEPH_DIR/log/cluster.log
[osd.0]
keyring = $CEPH_DIR/osd/keyring
osd data = $CEPH_DIR/osd
osd objectstore = $store
memstore device bytes = 268435456
bluestore block create = true
bluestore block size = ${CEPH_BLOCK_BYTES:-1073741824}
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 536870912
bluestore fsck on mount = false
EOF
}

# Another test's cluster holds the ports: wait for it (bounded).
_ceph_ports_free() { ! ss -Hltn 'sport = :6789 or sport = :3300' | grep -q .; }

_ceph_stop() {
    local f pid
    for f in "$CEPH_DIR"/run/osd.0.pid "$CEPH_DIR"/run/mon.a.pid; do
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill -KILL "$pid" 2>/dev/null
        wait_for 10 sh -c "! kill -0 $pid" || true
    done
}

ceph_osd_start() {
    rm -f "$CEPH_DIR/run/osd.0.pid"
    ceph-osd --id 0 >>"$CEPH_DIR/log/osd-start.log" 2>&1 ||
        { show_log "$CEPH_DIR/log/osd.0.log"; fail "ceph-osd did not start"; }
    wait_for 20 test -s "$CEPH_DIR/run/osd.0.pid" || fail "ceph-osd wrote no pidfile"
}

ceph_osd_kill() {
    local pid
    pid=$(cat "$CEPH_DIR/run/osd.0.pid")
    kill -KILL "$pid"
    wait_for 10 sh -c "! kill -0 $pid" || fail "the OSD did not die"
}

# A real write and read through the cluster: the OSD serves I/O.
_ceph_io_ok() {
    echo probe | timeout 5 rados -p rbd put probe - && timeout 5 rados -p rbd get probe - >/dev/null
}

ceph_start() {
    local store=${1:-memstore} auth=${2:-none}
    wait_for 60 _ceph_ports_free || fail "another Ceph cluster holds ports 3300/6789"
    mkdir -p "$CEPH_DIR"/{log,run,mon,osd}
    _ceph_conf "$store" "$auth"
    cleanup_fn _ceph_stop
    if [ "$auth" = cephx ]; then
        ceph-authtool --create-keyring "$CEPH_DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        ceph-authtool "$CEPH_DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' \
            --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
        ceph-mon --id a --mkfs --keyring "$CEPH_DIR/keyring" >/dev/null 2>&1 || fail "ceph-mon --mkfs failed"
    else
        ceph-mon --id a --mkfs --keyring /dev/null >/dev/null 2>&1 || fail "ceph-mon --mkfs failed"
    fi
    ceph-mon --id a || fail "ceph-mon did not start"
    [ "$(ceph_cli osd create)" = 0 ] || fail "ceph osd create did not give osd.0"
    if [ "$auth" = cephx ]; then
        ceph_cli auth get-or-create osd.0 mon 'allow profile osd' osd 'allow *' \
            mgr 'allow profile osd' -o "$CEPH_DIR/osd/keyring" || fail "no OSD key"
    fi
    ceph-osd --id 0 --mkfs >"$CEPH_DIR/log/mkfs.log" 2>&1 || { show_log "$CEPH_DIR/log/mkfs.log"; fail "ceph-osd --mkfs failed"; }
    ceph_osd_start
    ceph_cli osd pool create rbd 8 8 >/dev/null 2>&1 || fail "pool create failed"
    wait_for 60 _ceph_io_ok || { show_log "$CEPH_DIR/log/osd.0.log"; fail "the OSD serves no I/O in 60 s"; }
    ceph_rbd pool init rbd || fail "rbd pool init failed"
}

# A request abandoned at its deadline while the OSD is down is left to
# its completion, which frees it (backends/rbd.c); librbd runs that
# completion only when the request ends, so a daemon that exits first
# leaves librbd's own completion object behind (allocated inside
# librbd.so). make check-asan ignores those, nothing else.
rbd_lsan_suppress() {
    local supp=$TMP/rbd-lsan.supp
    printf 'leak:librbd.so\n' > "$supp"
    export LSAN_OPTIONS="suppressions=$supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
}

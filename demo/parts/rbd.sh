# demo/parts/rbd.sh: a one-node Ceph cluster (one monitor, one memstore
# OSD, auth none) on 127.0.0.1, an imported image and its snapshot,
# mounted through the rbd: and json: forms. Sourced by demo/demo.sh.
# The cluster is started by tests/lib/ceph.sh in a subshell: its helpers
# exit on failure, which then ends only the subshell.

_demo_rbd_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_demo_rbd_dir() { echo "$DEMO_WORK/rbd"; }

_demo_rbd_run() {
    (
        . "$_demo_rbd_top/tests/lib/functions.sh"
        cleanup_fn() { :; } # the demo stops the cluster, by its pidfiles
        CEPH_DIR=$(_demo_rbd_dir)
        . "$_demo_rbd_top/tests/lib/ceph.sh"
        "$@"
    )
}

_demo_rbd_setup() {
    local dir=$CEPH_DIR
    ceph_start memstore none
    head -c $((16 * 1048576)) /dev/urandom > "$dir/disk.img"
    ceph_rbd import --no-progress "$dir/disk.img" rbd/demo || fail "rbd import failed"
    ceph_rbd snap create --no-progress rbd/demo@before || fail "rbd snap create failed"
    cat >> "$DEMO_TABLE" <<EOT
rbd-legacy  rbd:rbd/demo:conf=$CEPH_CONF:rbd_cache=false
rbd-json    json:{"driver":"rbd","pool":"rbd","image":"demo","conf":"$CEPH_CONF","server":[{"host":"127.0.0.1","port":"6789"}]}
rbd-snap    rbd:rbd/demo@before:conf=$CEPH_CONF
EOT
}

demo_rbd_start() {
    command -v ceph-mon >/dev/null || { echo "rbd: ceph-mon is not installed" >&2; return 1; }
    mkdir -p "$(_demo_rbd_dir)"
    _demo_rbd_run _demo_rbd_setup
}

demo_rbd_check() {
    local dir name ok=0
    dir=$(_demo_rbd_dir)
    for name in rbd-legacy rbd-json rbd-snap; do
        if cmp -s "$DEMO_MNT/$name" "$dir/disk.img"; then
            ok=$((ok + 1))
        else
            echo "rbd: $name differs from the imported image" >&2
        fi
    done
    echo "rbd: $ok/3 entries (rbd:, json:, a snapshot) read back the 16 MiB image byte for byte"
    head -c 1048576 /dev/urandom > "$dir/chunk"
    dd if="$dir/chunk" of="$DEMO_MNT/rbd-legacy" bs=1M seek=4 conv=notrunc,fsync status=none &&
        CEPH_CONF=$dir/ceph.conf timeout 60 rbd export --no-progress rbd/demo "$dir/export" 2>/dev/null &&
        cmp -s <(dd if="$dir/export" bs=1M skip=4 count=1 status=none) "$dir/chunk" &&
        cmp -s "$DEMO_MNT/rbd-snap" "$dir/disk.img" &&
        { echo "rbd: 1 MiB written through rbd-legacy is in 'rbd export'; the snapshot entry still shows the old bytes"; ok=$((ok + 1)); }
    [ $ok -eq 4 ]
}

demo_rbd_stop() {
    local dir
    dir=$(_demo_rbd_dir)
    demo_stop_pidfile "$dir/run/osd.0.pid" "$dir/run/mon.a.pid"
}

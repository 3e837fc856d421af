# demo/parts/nfs.sh: nfs-ganesha on 127.0.0.1 (rpcbind confined to a
# private namespace), an image in its export, mounted as NFSv3 (read and
# write) and NFSv4 (read-only). Sourced by demo/demo.sh. The server is
# started by tests/lib/ganesha.sh in a subshell (see demo/parts/rbd.sh).

_demo_nfs_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_demo_nfs_dir() { echo "$DEMO_WORK/nfs"; }

_demo_nfs_setup() {
    ganesha_start
    head -c $((16 * 1048576)) /dev/urandom > "$GANESHA_EXPORT/disk.img"
    cp "$GANESHA_EXPORT/disk.img" "$GANESHA_DIR/disk.img.orig"
    cat >> "$DEMO_TABLE" <<EOT
nfs-v3      nfs://127.0.0.1/export/disk.img?nfsport=$GANESHA_PORT&mountport=$GANESHA_MNTPORT
nfs-v4      nfs://127.0.0.1/export/disk.img?version=4&nfsport=$GANESHA_PORT  ro
EOT
}

demo_nfs_start() {
    command -v ganesha.nfsd >/dev/null || { echo "nfs: nfs-ganesha is not installed" >&2; return 1; }
    mkdir -p "$(_demo_nfs_dir)"
    (
        . "$_demo_nfs_top/tests/lib/functions.sh"
        cleanup_fn() { :; } # the demo stops ganesha, by its session id
        GANESHA_DIR=$(_demo_nfs_dir)
        . "$_demo_nfs_top/tests/lib/ganesha.sh"
        _demo_nfs_setup
    )
}

demo_nfs_check() {
    local dir name ok=0
    dir=$(_demo_nfs_dir)
    for name in nfs-v3 nfs-v4; do
        if cmp -s "$DEMO_MNT/$name" "$dir/disk.img.orig"; then
            ok=$((ok + 1))
        else
            echo "nfs: $name differs from the exported file" >&2
        fi
    done
    echo "nfs: $ok/2 entries (NFSv3, NFSv4 read-only) read back the 16 MiB image byte for byte"
    head -c 1048576 /dev/urandom > "$dir/chunk"
    dd if="$dir/chunk" of="$DEMO_MNT/nfs-v3" bs=1M seek=4 conv=notrunc,fsync status=none &&
        cmp -s <(dd if="$dir/export/disk.img" bs=1M skip=4 count=1 status=none) "$dir/chunk" &&
        { echo "nfs: 1 MiB written through nfs-v3 is in the server's file"; ok=$((ok + 1)); }
    [ $ok -eq 3 ]
}

demo_nfs_stop() {
    local f
    f=$(_demo_nfs_dir)/sid
    [ -s "$f" ] && kill -KILL -- -"$(cat "$f")" 2>/dev/null
    rm -f "$f"
}

# demo/parts/gluster.sh: a local one-brick GlusterFS volume, served over
# glusterd's TCP port and over its Unix socket. Sourced by demo/demo.sh.
. "$(dirname "${BASH_SOURCE[0]}")/../../tests/lib/glusterd.sh"

demo_gluster_start() {
    local img
    glusterd_start "$DEMO_WORK/gluster" || return 1
    glusterd_volume nddemo || return 1
    # A one-brick volume finds a file put straight into its brick by name.
    img=$GD_BRICK/disk.img
    head -c $((16 * 1048576)) /dev/urandom > "$img" || return 1
    cp "$img" "$DEMO_WORK/gluster/disk.img.orig"
    cat >> "$DEMO_TABLE" <<EOT
gluster-tcp   gluster://127.0.0.1/nddemo/disk.img
gluster-unix  gluster+unix:///nddemo/disk.img?socket=$GD_SOCK
EOT
}

demo_gluster_check() {
    local name ok=0
    for name in gluster-tcp gluster-unix; do
        if cmp -s "$DEMO_MNT/$name" "$DEMO_WORK/gluster/disk.img.orig"; then
            ok=$((ok + 1))
        else
            echo "gluster: $name differs from the image in the brick" >&2
        fi
    done
    echo "gluster: $ok/2 entries (tcp, unix socket) read back the 16 MiB image byte for byte"
    [ $ok -eq 2 ]
}

demo_gluster_stop() {
    glusterd_stop
}

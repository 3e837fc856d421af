# demo/parts/iscsi.sh: a userspace iSCSI target (tgtd) on 127.0.0.1 and
# ::1 with a disk LUN and a cdrom LUN, mounted through iscsi:// URLs.
# Sourced by demo/demo.sh.
. "$(dirname "${BASH_SOURCE[0]}")/../../tests/lib/tgtd.sh"

_DEMO_ISCSI_PORT=
_DEMO_ISCSI_IQN=iqn.2026-01.demo.netdiskfs:storage

demo_iscsi_start() {
    local dir
    export TGT_DIR=$DEMO_WORK/iscsi
    dir=$TGT_DIR
    mkdir -p "$dir"
    head -c $((16 * 1048576)) /dev/urandom > "$dir/disk.img" || return 1
    head -c $((4 * 1048576)) /dev/urandom > "$dir/cdrom.iso" || return 1
    cp "$dir/disk.img" "$dir/disk.img.orig"
    _DEMO_ISCSI_PORT=$(tgt_free_port) || return 1
    tgtd_start "$_DEMO_ISCSI_PORT" "127.0.0.1:$_DEMO_ISCSI_PORT" "[::1]:$_DEMO_ISCSI_PORT" || return 1
    tgt_target "$_DEMO_ISCSI_PORT" 1 "$_DEMO_ISCSI_IQN" || return 1
    tgt_lun "$_DEMO_ISCSI_PORT" 1 1 "$dir/disk.img" || return 1
    tgt_lun "$_DEMO_ISCSI_PORT" 1 2 "$dir/cdrom.iso" --device-type cd || return 1
    cat >> "$DEMO_TABLE" <<EOT
iscsi-disk   iscsi://127.0.0.1:$_DEMO_ISCSI_PORT/$_DEMO_ISCSI_IQN/1
iscsi-cdrom  iscsi://[::1]:$_DEMO_ISCSI_PORT/$_DEMO_ISCSI_IQN/2
EOT
}

demo_iscsi_check() {
    local dir=$DEMO_WORK/iscsi ok=0
    if cmp -s "$DEMO_MNT/iscsi-disk" "$dir/disk.img.orig"; then
        ok=$((ok + 1))
    else
        echo "iscsi: iscsi-disk differs from the LUN's backing file" >&2
    fi
    if cmp -s "$DEMO_MNT/iscsi-cdrom" "$dir/cdrom.iso"; then
        ok=$((ok + 1))
    else
        echo "iscsi: iscsi-cdrom differs from the cdrom image" >&2
    fi
    echo "iscsi: $ok/2 LUNs (a 16 MiB disk over 127.0.0.1, a 4 MiB cdrom over [::1]) read back from tgtd byte for byte"
    [ $ok -eq 2 ]
}

demo_iscsi_stop() {
    [ -n "$_DEMO_ISCSI_PORT" ] && TGT_DIR=$DEMO_WORK/iscsi tgtd_stop "$_DEMO_ISCSI_PORT"
    return 0
}

# ceph-nfs.sh: the RBD and NFS scenarios, sourced by bench.sh:
#   (12) Ceph RBD (one-node cluster, one bluestore OSD on the local disk):
#        sequential read and write, random 4 KiB reads, against rbd-nbd
#        (needs the kernel's nbd module), rbd-fuse and qemu-storage-daemon's
#        rbd driver; fio's own rbd engine (librbd, no FUSE, rbd_cache off
#        so a write ends when the OSD has it) is the ceiling, not a peer
#   (13) NFS (nfs-ganesha, export on the tmpfs): sequential read against
#        qemu-storage-daemon's nfs driver and nfs-cp (to a file on the tmpfs)
# The helpers of tests/lib are sourced here, not at the top of bench.sh:
# a missing Ceph or ganesha must only skip these scenarios.

# rbd_nbd_why: why rbd-nbd (a kernel /dev/nbdN) is not a peer here.
rbd_nbd_why() {
    local m
    if ! have rbd-nbd; then
        m="not installed: rbd-nbd"
    fi
    if [ ! -e /dev/nbd0 ]; then
        if ! have modprobe; then
            m="no /dev/nbd0 and no modprobe"
        elif ! modprobe nbd 2>"$TMP/modprobe.err"; then
            m="kernel nbd module cannot be loaded: $(head -n 1 "$TMP/modprobe.err")${m:+; $m}"
        fi
    fi
    echo "${m:-rbd-nbd + /dev/nbd0 are here but this bench does not drive them}"
}

# m_rbdfuse IMAGE: rbd-fuse showing one image of pool rbd.
m_rbdfuse() {
    have rbd-fuse || { echo "not installed: rbd-fuse" >"$REASON"; return 1; }
    rbd-fuse -c "$CEPH_CONF" -p rbd -r "$1" "$MNT" -f >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/$1
    wait_mount "$MNT" "$DPID"
}

# r_fiorbd FIELD IMAGE FIO-ARGS...: fio's rbd engine on rbd/IMAGE (w_fio's
# run and parsing; the engine opens no file, so the name is only a label).
r_fiorbd() {
    local f=$1 img=$2; shift 2
    have fio && fio --enghelp 2>/dev/null | grep -qx '[[:space:]]*rbd' ||
        { echo "error fio has no rbd engine"; return; }
    MF=fio-rbd CEPH_ARGS="--rbd_cache=false" w_fio "$f" --ioengine=rbd \
        --clientname=admin --pool=rbd --rbdname="$img" "$@"
}

# ceph_bench_up: a cluster with the image as rbd/disk and an empty
# rbd/w for the writes; prints why not.
ceph_bench_up() {
    local t
    for t in ceph-mon ceph-osd rbd; do have $t || { echo "not installed: $t (ceph-mon ceph-osd ceph-common)"; return 1; }; done
    CEPH_DIR=$TMP/ceph CEPH_BLOCK_BYTES=$(((IMG_MIB * 2 + WRITE_MIB + 1024) << 20))
    . "$TOP/tests/lib/ceph.sh"
    soft ceph_start bluestore none || { echo "ceph did not start: $(soft_why)"; return 1; }
    timeout 300 rbd import --no-progress "$IMG" rbd/disk >"$TMP/rbd.err" 2>&1 &&
        timeout 60 rbd create --size "${WRITE_MIB}M" rbd/w >>"$TMP/rbd.err" 2>&1 ||
        { echo "rbd import/create failed: $(tail -n 1 "$TMP/rbd.err")"; return 1; }
}

rbd_scenarios() {
    local why= R Q F nbdwhy id
    # Any of the three ids (`--only '^12-rbd-write$'` names one).
    selected 12-rbd-seq || selected 12-rbd-write || selected 12-rbd-rand || return 0
    ceph_bench_up >"$TMP/ceph-up.log" 2>&1 || why=$(tail -n 1 "$TMP/ceph-up.log")
    nbdwhy=$(rbd_nbd_why)
    for id in seq write rand; do
        want 12-rbd-$id 60 "(12) RBD $id" || continue
        R="rbd:rbd/disk:conf=${CEPH_CONF:-}" Q="driver=rbd,pool=rbd,image=disk,conf=${CEPH_CONF:-}"
        case $id in
        seq) scenario 12-rbd-seq MB/s "(12) RBD seq read 1 MiB (one-node Ceph, bluestore)"
            F="r_fiorbd 7 disk --rw=read --bs=1M --iodepth=1"
            set -- "w_seqread $IMG_MIB" ro disk ;;
        write) scenario 12-rbd-write MB/s "(12) RBD seq write 1 MiB + fsync ($WRITE_MIB MiB)"
            R="rbd:rbd/w:conf=${CEPH_CONF:-}" Q="driver=rbd,pool=rbd,image=w,conf=${CEPH_CONF:-}"
            F="r_fiorbd 48 w --rw=write --bs=1M --iodepth=1 --size=${WRITE_MIB}m --time_based=0 --end_fsync=1"
            set -- "w_seqwrite $WRITE_MIB" rw w ;;
        # One job: rbd-fuse fails a second open of an open image (ENOENT).
        rand) scenario 12-rbd-rand IOPS "(12) RBD random 4 KiB O_DIRECT, 1 job x QD64 libaio"
            F="r_fiorbd 8 disk --rw=randread --bs=4k --iodepth=64 --randrepeat=0"
            set -- "w_rand --numjobs=1 --iodepth=64" ro disk ;;
        esac
        tool netdiskfs "m_nd '$R' $([ "$2" = ro ] && echo ro)" "$1"
        tool "rbd-nbd" "m_na '$nbdwhy'" "$1" 1.3
        tool "rbd-fuse" "m_rbdfuse $3" "$1" 1.3
        tool "qemu-storage-daemon" "m_qsd '$Q' $2" "$1" 1.3
        tool "fio rbd engine (no FUSE)" - "$F"
        # dd's 1 MiB writes reach a daemon one at a time, each waiting for
        # the OSD: the kernel's write cache lets several be in flight
        # (each still acknowledged by the OSD, fsync waiting for them).
        [ $id = write ] && tool "netdiskfs -o kernel-cache=writeback" \
            "ND_MOUNT_O=kernel-cache=writeback m_nd '$R'" "$1"
        run_or_skip "$why"
    done
    # By PID (pidfiles), before the NFS server starts.
    declare -F _ceph_stop >/dev/null && _ceph_stop
    rm -rf "$CEPH_DIR"
}

# --- (13) NFS -------------------------------------------------------------------
PMAP_PID=
pmap_stop() {
    [ -n "$PMAP_PID" ] || return 0
    kill -TERM "$PMAP_PID" 2>/dev/null
    wait "$PMAP_PID" 2>/dev/null
    PMAP_PID=
}
cleanup_fn pmap_stop

# nfs_bench_up: ganesha exporting a copy of the image; prints why not.
nfs_bench_up() {
    local t
    for t in ganesha.nfsd rpcbind unshare; do have $t || { echo "not installed: $t (nfs-ganesha-vfs rpcbind)"; return 1; }; done
    GANESHA_DIR=$T/ganesha
    . "$TOP/tests/lib/ganesha.sh"
    soft ganesha_start || { echo "ganesha did not start: $(soft_why)"; return 1; }
    cp "$IMG" "$GANESHA_EXPORT/disk.img"
}

# m_qsd_nfs: QEMU's nfs driver has no port options: it asks the portmapper
# on 127.0.0.1:111, which pmap.py plays while it runs (ganesha's own
# rpcbind is confined to its namespace).
m_qsd_nfs() {
    if [ -z "$PMAP_PID" ]; then
        ss -Hltn 'sport = :111' | grep -q . && { m_na "port 111 is taken: no portmapper for QEMU's nfs driver"; return 1; }
        python3 "$TOP/tests/bench/pmap.py" 127.0.0.1 111 "$TMP/pmap.pid" \
            100003="$GANESHA_PORT" 100005="$GANESHA_MNTPORT" >"$TMP/pmap.log" 2>&1 &
        PMAP_PID=$!
        wait_for 10 test -s "$TMP/pmap.pid" || { m_na "pmap.py did not start: $(tail -n 1 "$TMP/pmap.log")"; return 1; }
    fi
    m_qsd "driver=nfs,server.type=inet,server.host=127.0.0.1,path=/export/disk.img"
}

nfs_scenario() {
    local why U
    want 13-nfs-seq 60 "(13) NFS seq read" || return 0
    nfs_bench_up >"$TMP/nfs-up.log" 2>&1 || why=$(tail -n 1 "$TMP/nfs-up.log")
    # nfs_bench_up ran in this shell: GANESHA_* are set.
    U="nfs://127.0.0.1/export/disk.img?nfsport=${GANESHA_PORT:-0}&mountport=${GANESHA_MNTPORT:-0}"
    scenario 13-nfs-seq MB/s "(13) NFS seq read 1 MiB (nfs-ganesha, NFSv3)"
    tool netdiskfs "m_nd '$U' ro" "w_seqread $IMG_MIB"
    tool "qemu-storage-daemon" m_qsd_nfs "w_seqread $IMG_MIB"
    # nfs-cp cannot open /dev/null ("Failed to open"): a file on the tmpfs.
    have nfs-cp && tool "nfs-cp to tmpfs" - "timed $((IMG_MIB << 20)) nfs-cp '$U' '$T/nfs-cp.out'; rm -f '$T/nfs-cp.out'"
    have nfs-cp || tool "nfs-cp to tmpfs" "m_na 'not installed: nfs-cp (libnfs-utils)'" true
    run_or_skip "${why:-}"
    pmap_stop
    declare -F _ganesha_stop >/dev/null && _ganesha_stop
    return 0
}

# layers.sh: the scenarios of the layer stack, sourced by bench.sh:
#   (9)  cache-dir= (the persistent tier): a warm second mount (after
#        prefetch=all filled the directory) against cat of the same image
#        on the same local disk; the cost of filling it on a cold read;
#        httpdirfs with its own --cache
#   (10) overlay=PATH on an HTTP entry: writes against nbdkit's cow filter
#        + nbdfuse and qemu-storage-daemon's qcow2 overlay over its http
#        driver
#   (11) format=qcow2 over NBD and HTTP: against qemu-storage-daemon's
#        qcow2 node and qemu-nbd + nbdfuse over the same protocol driver
# Cache directories and overlays are on the local disk ($LOCAL), the
# servers' files on the tmpfs.

# nginx_up: nginx (serving $T) once; NGX_WHY says why not.
NGX_WHY=
nginx_up() {
    [ -n "$NGX_PID" ] && return 0
    unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY no_proxy NO_PROXY
    nginx_bench_start >"$TMP/nginx.err" 2>&1 && return 0
    NGX_WHY="nginx did not start: $(tail -n 1 "$TMP/nginx.err")"
    return 1
}

# run_or_skip WHY: run the declared scenario unless WHY is set.
run_or_skip() { if [ -n "$1" ]; then skip_scenario "$1"; else run_scenario; fi; }

# r_cat FILE: cat of a local file to /dev/null, timed.
r_cat() { timed "$(stat -c %s "$1")" sh -c 'cat "$1" >/dev/null' cat "$1"; }

# --- (9) cache-dir ------------------------------------------------------------
# m_tier_warm URL OPTS: fill the cache directory as a user would, then
# mount again (measured). A cold read keeps only what the tier's writer
# queue takes, so the first mount runs prefetch=all until its status says
# done (every block in the directory); it is unmounted once it is.
m_tier_warm() {
    local st=$MNT/.netdiskfs/status
    m_nd "$1" "$2,prefetch=all" || return 1
    if ! wait_for $((IMG_MIB / 4 + 60)) python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["entries"][0]
sys.exit(e["cache_dir"]["prefetch"]["state"] != "done")' "$st"; then
        echo "warm-up: prefetch=all not done in $((IMG_MIB / 4 + 60))s" >"$REASON"
        stop_mount
        return 1
    fi
    stop_mount
    m_nd "$1" "$2"
}

cache_scenarios() {
    local H CD=$LOCAL/nd-cache HC=$LOCAL/httpdirfs-cache why= co
    selected 9-cache-warm || selected 9-cache-cold || return 0
    nginx_up || why=$NGX_WHY
    H=http://127.0.0.1:$NGX_PORT/disk.img
    co="cache-dir=$CD,cache-dir-size=$((IMG_MIB * 2))M"
    if want 9-cache-warm 150 "(9) cache-dir warm second mount"; then
        cp "$IMG" "$LOCAL/disk.img" # the same bytes on the local disk, for cat
        scenario 9-cache-warm MB/s "(9) HTTP seq read 1 MiB, a second mount with a warm cache-dir on the local disk"
        tool netdiskfs "fresh_dir '$CD' && m_tier_warm '$H' '$co'" "w_seqread $IMG_MIB"
        tool "cat (local disk)" - "r_cat '$LOCAL/disk.img'" 0.8
        tool "httpdirfs --cache" "fresh_dir '$HC' && m_warm m_httpdirfs '$H' --cache --cache-location '$HC'" \
            "w_seqread $IMG_MIB" 2
        run_or_skip "$why"
        rm -f "$LOCAL/disk.img"
    fi
    if want 9-cache-cold 90 "(9) cache-dir cold first read"; then
        scenario 9-cache-cold MB/s "(9) HTTP seq read 1 MiB, first read filling an empty cache-dir"
        tool netdiskfs "fresh_dir '$CD' && m_nd '$H' '$co'" "w_seqread $IMG_MIB"
        tool "netdiskfs, no cache-dir" "m_nd '$H'" "w_seqread $IMG_MIB" 0.9
        tool "httpdirfs --cache" "fresh_dir '$HC' && m_httpdirfs '$H' --cache --cache-location '$HC'" \
            "w_seqread $IMG_MIB" 2
        run_or_skip "$why"
    fi
    rm -rf "$CD" "$HC"
    nginx_bench_stop
}

# --- (10) overlay ---------------------------------------------------------------
# m_qsd_overlay DIR URL: a new qcow2 in DIR whose backing is URL through
# QEMU's http driver, served writable by qemu-storage-daemon.
m_qsd_overlay() {
    have qemu-img || { echo "not installed: qemu-img (qemu-utils)" >"$REASON"; return 1; }
    qemu-img create -q -f qcow2 -u -F raw \
        -b "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"http\",\"url\":\"$2\"}}" \
        "$1/q.qcow2" "${IMG_MIB}M" >"$MLOG" 2>&1 || { echo "qemu-img create: $(tail -n 1 "$MLOG")" >"$REASON"; return 1; }
    m_qsd "driver=qcow2,file.driver=file,file.filename=$1/q.qcow2" rw
}

overlay_scenarios() {
    local H OV=$LOCAL/overlay why= id
    selected 10-overlay-randwrite || selected 10-overlay-seqwrite || return 0
    nginx_up || why=$NGX_WHY
    H=http://127.0.0.1:$NGX_PORT/disk.img
    for id in randwrite seqwrite; do
        want 10-overlay-$id 60 "(10) overlay $id" || continue
        if [ $id = randwrite ]; then
            scenario 10-overlay-$id IOPS "(10) HTTP + overlay: random 4 KiB writes O_DIRECT, 4 jobs x QD16 libaio"
            set -- w_randwrite
        else
            scenario 10-overlay-$id MB/s "(10) HTTP + overlay: seq write 1 MiB + fsync ($WRITE_MIB MiB)"
            set -- "w_seqwrite $WRITE_MIB"
        fi
        tool netdiskfs "fresh_dir '$OV' && m_nd '$H' overlay=$OV/nd.ovl" "$1"
        # The cow filter keeps its overlay in TMPDIR: the same local disk.
        tool "nbdkit cow + nbdfuse" "fresh_dir '$OV' && TMPDIR='$OV' m_nbdfuse_cmd rw nbdkit --exit-with-parent --filter=cow curl url='$H'" \
            "$1" 1.5
        tool "qemu-storage-daemon qcow2" "fresh_dir '$OV' && m_qsd_overlay '$OV' '$H'" "$1" 1.5
        run_or_skip "$why"
    done
    rm -rf "$OV"
    nginx_bench_stop
}

# --- (11) qcow2 -----------------------------------------------------------------
# qcow2_tools ID URL CHILD [rw]: netdiskfs with format=qcow2 on URL, and
# the peers on QEMU's driver options CHILD (file.driver=...) for the same
# server; the workload and targets from QC_WORK, QC_T1, QC_T2.
qcow2_tools() {
    local url=$1 child=$2 rw=${3:-ro}
    tool netdiskfs "m_nd '$url' format=qcow2" "$QC_WORK"
    tool "qemu-storage-daemon" "m_qsd 'driver=qcow2,$child' $rw" "$QC_WORK" "$QC_T1"
    tool "qemu-nbd + nbdfuse" "m_nbdfuse_cmd $rw qemu-nbd $([ "$rw" = ro ] && echo -r) --image-opts 'driver=qcow2,$child'" \
        "$QC_WORK" "$QC_T2"
}

qcow2_scenarios() {
    local Q=$T/disk.qcow2 QU QS HQ proto kind why= d
    local id
    for id in 11-qcow2-{nbd,http}-{seq,rand} 11-qcow2-write ''; do
        [ -n "$id" ] || return 0
        selected "$id" && break
    done
    if ! have qemu-img; then
        why="not installed: qemu-img (qemu-utils)"
    elif ! timeout 300 qemu-img convert -f raw -O qcow2 "$IMG" "$Q" 2>"$TMP/convert.err"; then
        why="qemu-img convert failed: $(head -n 1 "$TMP/convert.err")"
    fi
    chmod 644 "$Q" 2>/dev/null
    nbdkit_unix q -r file "$Q"
    QS=$(nbdkit_sock q) QU="nbd+unix:///?socket=$(nbdkit_sock q)"
    nginx_up || { HQ=; [ -n "$why" ] || why=$NGX_WHY; }
    HQ=http://127.0.0.1:$NGX_PORT/disk.qcow2
    for proto in nbd http; do
        for kind in seq rand; do
            want 11-qcow2-$proto-$kind 60 "(11) qcow2 over $proto, $kind" || continue
            d="(11) qcow2 (1 GiB, qemu-img convert) over ${proto^^}, decoded"
            if [ $kind = seq ]; then
                scenario 11-qcow2-$proto-$kind MB/s "$d: seq read 1 MiB"
                QC_WORK="w_seqread $IMG_MIB"
            else
                scenario 11-qcow2-$proto-$kind IOPS "$d: random 4 KiB O_DIRECT, 4 jobs x QD16 libaio"
                QC_WORK=w_randcold
            fi
            QC_T1=1.5 QC_T2=1.5
            if [ $proto = nbd ]; then
                qcow2_tools "$QU" "file.driver=nbd,file.server.type=unix,file.server.path=$QS"
            else
                qcow2_tools "$HQ" "file.driver=http,file.url=$HQ"
            fi
            run_or_skip "$why"
        done
    done
    nbdkit_stop q
    nginx_bench_stop
    if want 11-qcow2-write 60 "(11) qcow2 over NBD, seq write"; then
        [ -n "$why" ] || cp "$Q" "$T/w.qcow2"
        nbdkit_unix qw file "$T/w.qcow2"
        scenario 11-qcow2-write MB/s "(11) qcow2 over NBD, decoded: seq write 1 MiB + fsync ($WRITE_MIB MiB, allocated clusters)"
        QC_WORK="w_seqwrite $WRITE_MIB" QC_T1=1.2 QC_T2=-
        qcow2_tools "nbd+unix:///?socket=$(nbdkit_sock qw)" \
            "file.driver=nbd,file.server.type=unix,file.server.path=$(nbdkit_sock qw)" rw
        # The kernel's write cache keeps several of dd's writes in flight
        # (each still written through, fsync waits for all): a row of its
        # own, the mount-wide option not being the default.
        tool "netdiskfs -o kernel-cache=writeback" \
            "ND_MOUNT_O=kernel-cache=writeback m_nd 'nbd+unix:///?socket=$(nbdkit_sock qw)' format=qcow2" "$QC_WORK"
        run_or_skip "$why"
        nbdkit_stop qw
        rm -f "$T/w.qcow2"
    fi
    rm -f "$Q"
}

#!/bin/bash
# bench.sh [--quick] [--pairs N] [--only REGEX] [--tools REGEX] [--out DIR]
#          [--perf] [--report-only]: netdiskfs side
# by side with nbdfuse, qemu-storage-daemon, qemu-nbd, nbdkit's cow filter,
# httpdirfs, sshfs, rbd-fuse and the raw protocol clients (nbdcopy, curl,
# sftp, scp, iscsi-perf, glusterfs, nfs-cp, cat of a local file), on
# this machine, against the same servers (loopback only) and the same
# random image (on a private tmpfs, so dropping the page cache empties only
# the client side).
#
# For each scenario every tool runs in turn, netdiskfs first (A B C A B C
# ..., --pairs rounds, 3 by default), each run on a fresh mount after
# `echo 3 > /proc/sys/vm/drop_caches`. Prints a table (median, min-max,
# netdiskfs/peer ratio against the target of the issue, peak RSS of the
# netdiskfs daemon) and writes under the output directory (default
# tests/bench/out/): bench.csv, bench.md, bench.txt, bench.png, runs.tsv
# (every single run) and logs/ (logs of runs that failed).
#
# --quick: a 64 MiB image, one round, two NBD scenarios (the smoke run of
# `make check`), or with --only the scenarios it names. Scenarios (9)-(11)
# are in layers.sh, (12)-(13) in ceph-nfs.sh; (15) measures read
# amplification (bytes from the server / bytes read), not speed. --perf: record `perf record -g` of the netdiskfs daemon
# during its first run of each scenario, and a profile summary per
# scenario in perf/ (the figures of those runs include perf's overhead;
# PERF_CALLGRAPH="--call-graph dwarf" for libraries without frame
# pointers). --tools REGEX: run only the tools whose name matches (when
# tuning one side; the table then lacks the other ratios).
# --report-only: print the table again and rewrite bench.csv, bench.md and
# bench.png from the runs.tsv, scenarios.tsv and meta.tsv of --out.
# Every run is under a watchdog; a peer that cannot run
# (not installed, fails, hangs) is reported with the reason. The whole run
# is kept under 25 minutes (BENCH_BUDGET, seconds): scenarios that would
# start after the time budget are reported as skipped.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/sshd.sh"
. "$TOP/tests/lib/tgtd.sh"
. "$TOP/tests/lib/glusterd.sh"
export LC_ALL=C

QUICK=0 PAIRS= ONLY= TOOLSEL= OUT=${BENCH_OUT:-$TOP/tests/bench/out} PERF=0 REPORT_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --pairs) PAIRS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --tools) TOOLSEL=$2; shift ;;
    --out) OUT=$2; shift ;;
    --perf) PERF=1 ;;
    --report-only) REPORT_ONLY=1 ;;
    *) echo "usage: $0 [--quick] [--pairs N] [--only REGEX] [--tools REGEX] [--out DIR] [--perf] [--report-only]" >&2; exit 2 ;;
    esac
    shift
done

if [ $QUICK = 1 ]; then
    IMG_MIB=64 PAIRS=${PAIRS:-1} FIO_RT=1 SEQ_CAP=10 DELAY_MIB=32 WRITE_MIB=32 WARM_MIB=32
else
    IMG_MIB=1024 PAIRS=${PAIRS:-3} FIO_RT=3 SEQ_CAP=10 DELAY_MIB=256 WRITE_MIB=256 WARM_MIB=192
fi
BUDGET=${BENCH_BUDGET:-1380} # seconds: no scenario starts after this
CACHE_MIB=256                 # netdiskfs's default cache-size
RSS_LIMIT_MIB=$((CACHE_MIB + 64))
MOUNT_WAIT=20                 # seconds for a mount to come up
UNMOUNT_WAIT=10               # seconds for a daemon to exit once unmounted
RUNS=$OUT/runs.tsv TOOLS=$OUT/tools.tsv SCENS=$OUT/scenarios.tsv META=$OUT/meta.tsv
MNT=$TMP/mnt QSDF=$TMP/qsd.img T=$TMP/img
LOCAL=$TMP/local # on the local disk (not tmpfs): cache dirs, overlays
IMG=$T/disk.img

# A fresh output directory and the image on a private tmpfs.
setup() {
    [ -x "$ND" ] || fail "no netdiskfs binary at $ND (make netdiskfs)"
    [ "$(id -u)" = 0 ] || fail "the benchmark needs root (FUSE mounts of peers, drop_caches, tmpfs)"
    mkdir -p "$OUT"
    rm -rf "$OUT/logs" "$OUT/perf"
    mkdir -p "$OUT/logs"
    if [ $PERF = 1 ]; then
        command -v perf >/dev/null || fail "--perf: perf is not installed"
        mkdir -p "$OUT/perf"
    fi
    printf 'scenario\ttool\tpair\tstatus\tvalue\tnd_rss_kib\tnd_cpu_s\tnote\n' >"$RUNS"
    printf 'scenario\tunit\tdescription\n' >"$SCENS"
    printf 'scenario\ttool\ttarget\n' >"$TOOLS"
    printf 'date\tmachine\timage_mib\trounds\tnetdiskfs\n%s\t%s\t%s\t%s\t%s\n' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(machine)" "$IMG_MIB" "$PAIRS" \
        "$("$ND" --version 2>/dev/null | head -n 1)$(git -C "$TOP" describe --always --dirty 2>/dev/null | sed 's/^/, commit /')" >"$META"

    mkdir -p "$T" "$MNT" "$LOCAL"
    touch "$QSDF"
    # The image, its qcow2 copy and the NFS export's copy, written files.
    mount -t tmpfs -o size=$((IMG_MIB * 5 + WRITE_MIB * 3 + 256))m,mode=755 netdiskfs-bench "$T" ||
        fail "cannot mount a tmpfs on $T"
    cleanup_fn "umount '$T' 2>/dev/null || umount -l '$T'"
    head -c $((IMG_MIB << 20)) /dev/urandom >"$IMG"
    head -c $((WRITE_MIB << 20)) /dev/urandom >"$T/src.img"
    chmod 644 "$IMG" "$T/src.img"
}

have() { command -v "$1" >/dev/null 2>&1; }
now() { echo "$EPOCHREALTIME"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# --- mounts: each sets MF (the file to use), DPID, UMNT, UKIND -----------
MF= DPID= UMNT= UKIND= MLOG=$TMP/mount.log
REASON=$TMP/reason

# Is PID alive (not gone, not a zombie)?
alive() {
    local s
    s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$s" ] && [ "${s:0:1}" != Z ]
}
is_mounted() { findmnt -rn -M "$1" >/dev/null 2>&1; }
# Wait (bounded) for PATH to be mounted while PID lives.
wait_mount() {
    local path=$1 pid=$2 n=$((MOUNT_WAIT * 10))
    while ((n-- > 0)); do
        is_mounted "$path" && return 0
        alive "$pid" || { echo "exited before mounting: $(tail -n 2 "$MLOG" | tr '\n' ' ')" >"$REASON"; return 1; }
        sleep 0.1
    done
    echo "hung: not mounted after ${MOUNT_WAIT}s" >"$REASON"
    return 1
}

# The netdiskfs daemon on a one-entry table: m_nd URL [OPTS].
m_nd() {
    local opts=${2:-}
    # ND_BENCH_OPTS: extra entry options, for tuning runs (not in the table).
    [ -n "${ND_BENCH_OPTS:-}" ] && opts=${opts:+$opts,}$ND_BENCH_OPTS
    echo "d $1 $opts" >"$TMP/tab"
    rm -f "$TMP/nd.pid"
    "${ND_BIN:-$ND}" "$TMP/tab" "$MNT" -f --pidfile "$TMP/nd.pid" ${ND_MOUNT_O:+-o "$ND_MOUNT_O"} >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/d
    wait_mount "$MNT" "$DPID" || return 1
    wait_for 10 test -s "$TMP/nd.pid"
}

# m_nbdfuse URI [rw]
m_nbdfuse() {
    have nbdfuse || { echo "not installed: nbdfuse (libnbd-bin)" >"$REASON"; return 1; }
    local ro=-r
    [ "${2:-}" = rw ] && ro=
    nbdfuse $ro "$MNT/disk" "$1" >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/disk
    wait_mount "$MNT" "$DPID"
}

# m_nbdfuse_cmd ro|rw CMD...: nbdfuse running its own server (CMD, socket
# activation); the server goes with nbdfuse.
m_nbdfuse_cmd() {
    have nbdfuse || { echo "not installed: nbdfuse (libnbd-bin)" >"$REASON"; return 1; }
    have "$2" || { echo "not installed: $2" >"$REASON"; return 1; }
    local ro=-r
    [ "$1" = rw ] && ro=
    shift
    nbdfuse $ro "$MNT/disk" [ "$@" ] >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/disk
    wait_mount "$MNT" "$DPID"
}

# m_na REASON: a peer that cannot run on this machine: its row says why.
m_na() { echo "n/a ($1)" >"$REASON"; return 1; }

# fresh_dir DIR: an empty directory (a cold cache, a new overlay).
fresh_dir() { rm -rf "$1" && mkdir -p "$1"; }

# m_warm MOUNT-CMD...: mount, read the whole file once (filling a
# persistent cache), unmount and mount again: the second mount is measured.
m_warm() {
    "$@" || return 1
    if ! timeout -k 5 $((IMG_MIB / 4 + 60)) dd if="$MF" of=/dev/null bs=1M 2>"$TMP/warm.err"; then
        echo "warm-up read did not finish in $((IMG_MIB / 4 + 60))s: $(grep -v records "$TMP/warm.err" | head -n 1)" >"$REASON"
        stop_mount
        return 1
    fi
    stop_mount
    "$@"
}

# m_qsd BLOCKDEV-OPTIONS [rw]: qemu-storage-daemon's FUSE export of one node.
m_qsd() {
    have qemu-storage-daemon || { echo "not installed: qemu-storage-daemon (qemu-system-common)" >"$REASON"; return 1; }
    local ro=on w=off
    [ "${2:-}" = rw ] && ro=off w=on
    qemu-storage-daemon --blockdev "$1,node-name=n0,read-only=$ro" \
        --export "type=fuse,id=e0,node-name=n0,mountpoint=$QSDF,writable=$w" >"$MLOG" 2>&1 &
    DPID=$! UMNT=$QSDF UKIND=qsd MF=$QSDF
    wait_mount "$QSDF" "$DPID"
}

# m_httpdirfs URL [ARGS]: httpdirfs without its cache, on the directory
# of URL (nginx's autoindex; its single-file mode rejects nginx's ranges).
m_httpdirfs() {
    have httpdirfs || { echo "not installed: httpdirfs" >"$REASON"; return 1; }
    local url=$1; shift
    httpdirfs -f --no-range-check "$@" "${url%/*}/" "$MNT" >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/${url##*/}
    wait_mount "$MNT" "$DPID"
}

# m_sshfs: sshfs of the image's directory.
m_sshfs() {
    have sshfs || { echo "not installed: sshfs" >"$REASON"; return 1; }
    sshfs -f -o ro,port="$SSHD_PORT",IdentityFile="$SSH_CLIENT_KEY" \
        -o UserKnownHostsFile="$SSHD_KNOWN_HOSTS",GlobalKnownHostsFile=/dev/null,BatchMode=yes \
        "root@127.0.0.1:$T" "$MNT" >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/disk.img
    wait_mount "$MNT" "$DPID"
}

# m_glusterfs VOLUME [ARGS]: the native glusterfs FUSE client.
m_glusterfs() {
    have glusterfs || { echo "not installed: glusterfs (glusterfs-client)" >"$REASON"; return 1; }
    local vol=$1; shift
    glusterfs -N "$@" --volfile-server=127.0.0.1 --volfile-id="$vol" \
        --log-file="$TMP/glusterfs-client.log" "$MNT" >"$MLOG" 2>&1 &
    DPID=$! UMNT=$MNT UKIND=fuse MF=$MNT/disk.img
    wait_mount "$MNT" "$DPID"
}

# Unmount whatever the last mount function set up; kill (bounded) a daemon
# that does not exit. Appends a note to $REASON when it had to kill.
stop_mount() {
    local n
    [ -n "$UMNT" ] || return 0
    if [ "$UKIND" = qsd ]; then
        kill -TERM "$DPID" 2>/dev/null
    elif is_mounted "$UMNT"; then
        timeout 20 fusermount3 -u "$UMNT" 2>/dev/null || true
    fi
    n=$((UNMOUNT_WAIT * 10))
    while alive "$DPID" && ((n-- > 0)); do sleep 0.1; done
    if alive "$DPID"; then
        echo "killed: did not exit within ${UNMOUNT_WAIT}s of the unmount" >>"$REASON"
        kill -TERM "$DPID" 2>/dev/null
        n=30
        while alive "$DPID" && ((n-- > 0)); do sleep 0.1; done
        alive "$DPID" && kill -KILL "$DPID" 2>/dev/null
    fi
    wait "$DPID" 2>/dev/null
    is_mounted "$UMNT" && { fusermount3 -u -z "$UMNT" 2>/dev/null || umount -l "$UMNT" 2>/dev/null; }
    UMNT= DPID= MF=
    return 0
}
cleanup_fn stop_mount

# --- workloads: print "ok VALUE [NOTE]", "hung REASON" or "error REASON" --

# dd_result ERRFILE RC
dd_result() {
    local err=$1 rc=$2 v
    v=$(awk '/bytes.*copied/ { b = $1; for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1) }
        END { if (b > 0 && s > 0) printf "%.1f", b / s / 1e6 }' "$err")
    if [ $rc = 137 ] || { [ $rc = 124 ] && [ -z "$v" ]; }; then
        echo "hung no progress within ${SEQ_CAP}s (watchdog)"
    elif [ -z "$v" ]; then
        echo "error $(grep -v records "$err" | head -n 1)"
    elif [ $rc = 124 ] || [ $rc = 130 ]; then
        echo "ok $v capped-at-${SEQ_CAP}s"
    elif [ $rc != 0 ]; then
        echo "error $(grep -v -e records -e copied "$err" | head -n 1)"
    else
        echo "ok $v"
    fi
}

# w_seqread MIB: dd 1 MiB blocks; after SEQ_CAP seconds dd is interrupted
# (its partial rate is kept); killed 5 s later if it does not stop.
w_seqread() {
    local rc
    timeout -k 5 -s INT $SEQ_CAP dd if="$MF" of=/dev/null bs=1M count="$1" 2>"$TMP/dd.err"
    rc=$?
    dd_result "$TMP/dd.err" $rc
}

# w_seqwrite MIB: dd 1 MiB blocks from a random file, final fsync.
w_seqwrite() {
    local rc
    timeout -k 5 -s INT $((SEQ_CAP * 2)) dd if="$T/src.img" of="$MF" bs=1M count="$1" \
        conv=fsync,notrunc 2>"$TMP/dd.err"
    rc=$?
    dd_result "$TMP/dd.err" $rc
}

# w_fio FIELD ARGS...: fio time-based for FIO_RT s; FIELD 7 = read KiB/s,
# 8 = read IOPS, 48 = write KiB/s, 49 = write IOPS (terse v3).
w_fio() {
    local field=$1 rc v; shift
    timeout -k 5 $((FIO_RT + 30)) fio --name=bench --filename="$MF" --runtime=$FIO_RT \
        --time_based --output-format=terse --terse-version=3 "$@" >"$TMP/fio.out" 2>"$TMP/fio.err"
    rc=$?
    [ $rc = 124 ] || [ $rc = 137 ] && { echo "hung fio did not finish in $((FIO_RT + 30))s (watchdog)"; return; }
    v=$(awk -F';' -v f="$field" 'NF > 50 { if (f == 7 || f == 48) printf "%.1f", $f * 1024 / 1e6; else printf "%.0f", $f }' "$TMP/fio.out")
    if [ $rc != 0 ] || [ -z "$v" ] || [ "$v" = 0 ] || [ "$v" = 0.0 ]; then
        echo "error fio: $(cat "$TMP/fio.err" "$TMP/fio.out" | grep -v '^$' | head -n 1)"
    else
        echo "ok $v"
    fi
}
w_direct4k() { w_fio 7 --rw=read --bs=4k --direct=1 --ioengine=psync; }
w_rand() { w_fio 8 --rw=randread --bs=4k --direct=1 --ioengine=libaio --iodepth=16 \
    --numjobs=4 --group_reporting --randrepeat=0 "$@"; }
w_randcold() { w_rand; }
# One reader, one request in flight: the latency of one miss.
w_randqd1() { w_fio 8 --rw=randread --bs=4k --direct=1 --ioengine=libaio --iodepth=1 \
    --numjobs=1 --randrepeat=0; }
# Random 4 KiB writes, the same shape as the reads.
w_randwrite() { w_fio 49 --rw=randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=16 \
    --numjobs=4 --group_reporting --randrepeat=0; }
# Warm: read the first WARM_MIB once (O_DIRECT, so only the daemon's own
# cache can keep it), then random reads inside that region.
w_randwarm() {
    timeout -k 5 60 dd if="$MF" of=/dev/null bs=1M count=$WARM_MIB iflag=direct 2>"$TMP/dd.err" ||
        { echo "error warm-up: $(head -n 1 "$TMP/dd.err")"; return; }
    w_rand --size=${WARM_MIB}m
}

# timed BYTES CMD...: run CMD (watchdog SEQ_CAP + 15 s), rate = BYTES / time.
timed() {
    local bytes=$1 t0 t1 rc; shift
    t0=$(now)
    timeout -k 5 $((SEQ_CAP + 15)) "$@" >"$TMP/raw.out" 2>"$TMP/raw.err"
    rc=$?
    t1=$(now)
    case $rc in
    0) awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "ok %.1f\n", b / (z - a) / 1e6 }' ;;
    124 | 137) echo "hung no end within $((SEQ_CAP + 15))s (watchdog)" ;;
    *) echo "error $(cat "$TMP/raw.err" "$TMP/raw.out" | grep -v '^$' | head -n 1)" ;;
    esac
}

# r_nbdcopy SRC DST [BYTES]: nbdcopy over one connection.
r_nbdcopy() {
    have nbdcopy || { echo "error not installed: nbdcopy (libnbd-bin)"; return; }
    timed "${3:-$((IMG_MIB << 20))}" nbdcopy -C 1 --flush "$1" "$2"
}

# r_curl URL [CURL-ARGS]: download to /dev/null, capped at SEQ_CAP.
r_curl() {
    local url=$1 rc out; shift
    have curl || { echo "error not installed: curl"; return; }
    out=$(curl -sS --noproxy '*' --max-time $SEQ_CAP -o /dev/null \
        -w '%{size_download} %{time_total} %{response_code}' "$@" "$url" 2>"$TMP/raw.err")
    rc=$?
    set -- $out
    if [ "${1:-0}" = 0 ]; then
        echo "error curl: $(head -n 1 "$TMP/raw.err")"
    elif [ $rc = 28 ]; then
        awk -v b="$1" -v s="$2" -v c=$SEQ_CAP 'BEGIN { printf "ok %.1f capped-at-%ss\n", b / s / 1e6, c }'
    elif [ $rc != 0 ]; then
        echo "error curl: $(head -n 1 "$TMP/raw.err")"
    else
        awk -v b="$1" -v s="$2" 'BEGIN { printf "ok %.1f\n", b / s / 1e6 }'
    fi
}

SSH_OPTS=()
r_sftp() {
    have sftp || { echo "error not installed: sftp"; return; }
    echo "get $IMG /dev/null" >"$TMP/sftp.batch"
    timed $((IMG_MIB << 20)) sftp -q -b "$TMP/sftp.batch" "${SSH_OPTS[@]}" -P "$SSHD_PORT" root@127.0.0.1
}
r_scp() {
    have scp || { echo "error not installed: scp"; return; }
    timed $((IMG_MIB << 20)) scp -q "${SSH_OPTS[@]}" -P "$SSHD_PORT" "root@127.0.0.1:$IMG" /dev/null
}

# r_iscsiperf URL: iscsi-perf, 8 requests in flight of 256 KiB, for
# FIO_RT+2 seconds: its last average (it prints MiB/s as "MB/s").
r_iscsiperf() {
    local rc v
    have iscsi-perf || { echo "error not installed: iscsi-perf (libiscsi-bin)"; return; }
    timeout -k 5 -s INT $((FIO_RT + 2)) iscsi-perf -m 8 -b 512 "$1" >"$TMP/raw.out" 2>&1
    rc=$?
    v=$(tr '\r' '\n' <"$TMP/raw.out" | sed -n 's/.*iops average [0-9]* (\([0-9.]*\) MB\/s).*/\1/p' | tail -n 1)
    if [ -n "$v" ]; then
        awk -v v="$v" 'BEGIN { printf "ok %.1f\n", v * 1048576 / 1e6 }'
    else
        echo "error iscsi-perf (rc $rc): $(tr '\r' '\n' <"$TMP/raw.out" | grep -v '^$' | tail -n 1)"
    fi
}

# --- scenario runner -------------------------------------------------------
SC= SC_TOOLS=()
declare -A SC_MOUNT SC_WORK SC_SKIP

# scenario ID UNIT DESCRIPTION: start declaring a scenario.
scenario() {
    SC=$1 SC_TOOLS=()
    SC_MOUNT=() SC_WORK=() SC_SKIP=()
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SCENS"
}
# tool NAME MOUNT-CMD|- WORK-CMD [TARGET-RATIO]: add a tool (netdiskfs first).
# With ND_BASE=BINARY, netdiskfs-base (that binary, same mount and
# workload) runs right after netdiskfs in every round: paired runs of two
# builds, with their ratio in the table.
tool() {
    SC_TOOLS+=("$1")
    SC_MOUNT[$1]=$2 SC_WORK[$1]=$3
    printf '%s\t%s\t%s\n' "$SC" "$1" "${4:--}" >>"$TOOLS"
    if [ "$1" = netdiskfs ] && [ -n "${ND_BASE:-}" ]; then
        tool netdiskfs-base "ND_BIN='$ND_BASE' $2" "$3"
    fi
}

record() { # TOOL PAIR STATUS VALUE RSS CPU NOTE
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SC" "$@" >>"$RUNS"
}

# selected ID: is the scenario chosen by --only?
selected() { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; }

# want ID SECONDS DESCRIPTION: selected, and would it end (by its estimate
# of SECONDS for 3 rounds) within the time budget? Otherwise reported as
# skipped.
want() {
    local est=$(($2 * PAIRS / 3))
    selected "$1" || return 1
    if ((SECONDS + est > BUDGET)); then
        scenario "$1" - "$3"
        printf '%s\t%s\t0\tskipped\t\t\t\tnot started: %ss elapsed + ~%ss would pass the %ss budget\n' \
            "$1" all $SECONDS $est "$BUDGET" >>"$RUNS"
        echo "== $1: skipped (time budget)"
        return 1
    fi
    return 0
}

# skip_scenario REASON: every tool of the declared scenario is reported.
skip_scenario() {
    local t
    for t in "${SC_TOOLS[@]}"; do record "$t" 0 error "" "" "" "$1"; done
    echo "== $SC: not run: $1"
}

# run_one TOOL ROUND: mount (if the tool mounts), drop caches, run the
# workload, read the daemon's peak RSS and CPU time, unmount, record.
run_one() {
    local name=$1 pair=$2 res status value rest note rss= cpu= log f
    log=$OUT/logs/$SC-${name//[ \/]/_}-$pair.log
    : >"$REASON"
    : >"$MLOG"
    MF= DPID= UMNT= UKIND=
    if [ "${SC_MOUNT[$name]}" != - ] && ! eval "${SC_MOUNT[$name]}"; then
        res="error $(head -n 1 "$REASON")"
        grep -q '^hung' "$REASON" && res=$(head -n 1 "$REASON")
        [ -s "$REASON" ] || res="error mount failed: $(tail -n 1 "$MLOG")"
        sed -i 1d "$REASON" # in $res already: not twice in the note
        stop_mount
    else
        drop_caches
        for f in raw.out raw.err dd.err fio.out fio.err; do : >"$TMP/$f"; done
        [ "$name" = netdiskfs ] && [ "$pair" = 1 ] && perf_start
        res=$(eval "${SC_WORK[$name]}")
        perf_stop
        if [ "$name" = netdiskfs ] && [ -n "$DPID" ]; then
            rss=$(awk '/^VmHWM/ { print $2 }' /proc/"$DPID"/status 2>/dev/null)
            cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' /proc/"$DPID"/stat 2>/dev/null)
        fi
        stop_mount
    fi
    read -r status rest <<<"$res"
    status=${status:-error} value=
    [ "$status" = ok ] && read -r value rest <<<"$rest"
    note=$(echo "$rest" $(tr '\n' ' ' <"$REASON"))
    note=${note//$'\t'/ }
    if [ "$status" != ok ] || [ -n "$note" ]; then
        (cd "$TMP" && tail -n 50 "$MLOG" raw.out raw.err dd.err fio.out fio.err) >"$log" 2>/dev/null
    fi
    record "$name" "$pair" "$status" "$value" "$rss" "$cpu" "$note"
    printf '   %-22s %-5s %8s %s%s\n' "$name" "$status" "$value" "${rss:+ (RSS $((rss / 1024)) MiB, CPU ${cpu}s)}" "${note:+ [$note]}"
    [ "$status" = ok ]
}

# --perf: profile the netdiskfs daemon during one workload.
PERF_PID=
perf_start() {
    [ $PERF = 1 ] && [ -n "$DPID" ] || return 0
    perf record -F 999 ${PERF_CALLGRAPH:--g} -p "$DPID" -o "$OUT/perf/$SC.data" >"$OUT/perf/$SC.record.log" 2>&1 &
    PERF_PID=$!
    sleep 0.5
}
perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null
    wait "$PERF_PID" 2>/dev/null
    PERF_PID=
    {
        echo "== $SC: netdiskfs daemon, self time by DSO and symbol"
        perf report -i "$OUT/perf/$SC.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -n 40
        echo
        echo "== $SC: inclusive time (children) by symbol"
        perf report -i "$OUT/perf/$SC.data" --children --sort symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -n 60
    } >"$OUT/perf/$SC.txt"
}

# Run the declared scenario: PAIRS rounds, every tool once per round. A
# tool that failed or hung is not tried again (its reason stands). Round
# P starts at tool P-1 (then wraps): the first run of a round was slower
# whichever tool it was (one binary twice in a round: 746 and 845 MB/s
# first, 1055 and 1130 second), so no tool is always first.
run_scenario() {
    local pair t i n=${#SC_TOOLS[@]}
    echo "== $SC"
    for ((pair = 1; pair <= PAIRS; pair++)); do
        if ((pair > 1 && SECONDS > BUDGET + 60)); then
            echo "   (round $pair skipped: time budget)"
            break
        fi
        for ((i = 0; i < n; i++)); do
            t=${SC_TOOLS[(i + pair - 1) % n]}
            [ -n "${SC_SKIP[$t]:-}" ] && continue
            [ -z "$TOOLSEL" ] || [[ $t =~ $TOOLSEL ]] || continue
            run_one "$t" "$pair" || SC_SKIP[$t]=1
        done
    done
}

# soft CMD...: run a server helper of tests/lib in this shell with its
# fail/requires returning instead of ending the benchmark; their messages
# go to $TMP/soft.err.
soft() {
    local saved_fail saved_req rc
    saved_fail=$(declare -f fail) saved_req=$(declare -f requires)
    : >"$TMP/soft.err"
    fail() { echo "$*" >>"$TMP/soft.err"; return 1; }
    requires() { have "$1" || { echo "not installed: $1" >>"$TMP/soft.err"; return 1; }; }
    "$@" >>"$TMP/soft.log" 2>&1
    rc=$?
    eval "$saved_fail"
    eval "$saved_req"
    return $rc
}
soft_why() { tail -n 1 "$TMP/soft.err" 2>/dev/null; }

# r_fionbd URI QD JOBS: fio's nbd engine (libnbd straight from fio, no
# FUSE, one connection per job) in the shape of the cold random reads:
# what the server and the socket give without a FUSE round trip.
r_fionbd() {
    have fio && fio --enghelp 2>/dev/null | grep -qx '[[:space:]]*nbd' ||
        { echo "error fio has no nbd engine"; return; }
    MF=fio-nbd w_fio 8 --rw=randread --bs=4k --ioengine=nbd --uri="$1" \
        --iodepth="$2" --numjobs="$3" --group_reporting --randrepeat=0
}

# rand_scenario ID URI QSD-OPTS WORKLOAD TARGET WHAT: a cold random
# scenario, with the same target against both peers (full mode only),
# and fio's nbd engine as the ceiling without FUSE (no target).
rand_scenario() {
    [ $QUICK = 0 ] && want "$1" 45 "(4) NBD random 4 KiB, $6" || return 0
    scenario "$1" IOPS "(4) NBD random 4 KiB O_DIRECT, $6"
    tool netdiskfs "m_nd '$2'" "$4"
    tool nbdfuse "m_nbdfuse '$2'" "$4" "$5"
    tool qemu-storage-daemon "m_qsd $3" "$4" "$5"
    local shape="16 4" # fio's iodepth and jobs, as the workload has them
    [ "$4" = w_randqd1 ] && shape="1 1"
    tool "fio nbd engine (no FUSE)" - "r_fionbd '$2' $shape"
    run_scenario
}

# --- (1)-(5): NBD ----------------------------------------------------------
nbd_scenarios() {
    local S U TCPURI DS DU WS WU QS QT
    nbdkit_unix ro -r file "$IMG"
    S=$(nbdkit_sock ro) U="nbd+unix:///?socket=$(nbdkit_sock ro)"
    QS="driver=nbd,server.type=unix,server.path=$S"
    nbdkit_tcp rotcp 127.0.0.1 -r file "$IMG"
    TCPURI="nbd://127.0.0.1:$(nbdkit_port rotcp)"
    QT="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$(nbdkit_port rotcp)"
    nbdkit_unix delay -r --filter=delay file "$IMG" rdelay=2ms wdelay=2ms
    DS=$(nbdkit_sock delay) DU="nbd+unix:///?socket=$(nbdkit_sock delay)"

    if want 1-nbd-unix 40 "(1) NBD seq read 1 MiB, Unix socket"; then
        scenario 1-nbd-unix MB/s "(1) NBD seq read 1 MiB, Unix socket"
        tool netdiskfs "m_nd '$U'" "w_seqread $IMG_MIB"
        tool nbdfuse "m_nbdfuse '$U'" "w_seqread $IMG_MIB" 1.3
        tool qemu-storage-daemon "m_qsd $QS" "w_seqread $IMG_MIB" 1.3
        tool "nbdcopy -C 1" - "r_nbdcopy '$U' null:"
        run_scenario
    fi
    if [ $QUICK = 0 ] && want 1-nbd-tcp 40 "(1) NBD seq read 1 MiB, TCP"; then
        scenario 1-nbd-tcp MB/s "(1) NBD seq read 1 MiB, TCP"
        tool netdiskfs "m_nd '$TCPURI'" "w_seqread $IMG_MIB"
        tool nbdfuse "m_nbdfuse '$TCPURI'" "w_seqread $IMG_MIB" 1.3
        tool qemu-storage-daemon "m_qsd driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$(nbdkit_port rotcp)" \
            "w_seqread $IMG_MIB" 1.3
        tool "nbdcopy -C 1" - "r_nbdcopy '$TCPURI' null:"
        run_scenario
    fi
    if [ $QUICK = 0 ] && want 2-nbd-delay 60 "(2) NBD seq read 1 MiB, +2 ms per request"; then
        scenario 2-nbd-delay MB/s "(2) NBD seq read 1 MiB, +2 ms per request ($DELAY_MIB MiB; nbdcopy: whole image)"
        tool netdiskfs "m_nd '$DU'" "w_seqread $DELAY_MIB"
        tool nbdfuse "m_nbdfuse '$DU'" "w_seqread $DELAY_MIB" 5
        tool qemu-storage-daemon "m_qsd driver=nbd,server.type=unix,server.path=$DS" "w_seqread $DELAY_MIB"
        tool "nbdcopy -C 1" - "r_nbdcopy '$DU' null:"
        run_scenario
    fi
    if want 3-nbd-odirect 45 "(3) NBD seq read 4 KiB O_DIRECT"; then
        scenario 3-nbd-odirect MB/s "(3) NBD seq read 4 KiB O_DIRECT, Unix socket"
        tool netdiskfs "m_nd '$U'" w_direct4k
        tool nbdfuse "m_nbdfuse '$U'" w_direct4k 5
        tool qemu-storage-daemon "m_qsd $QS" w_direct4k
        run_scenario
    fi
    if [ $QUICK = 0 ] && want 3-nbd-odirect-delay 30 "(3) NBD seq read 4 KiB O_DIRECT, +2 ms"; then
        scenario 3-nbd-odirect-delay MB/s "(3) NBD seq read 4 KiB O_DIRECT, +2 ms per request"
        tool netdiskfs "m_nd '$DU'" w_direct4k
        tool nbdfuse "m_nbdfuse '$DU'" w_direct4k
        run_scenario
    fi
    rand_scenario 4-nbd-rand-cold "$U" "$QS" w_randcold 1.2 "4 jobs x QD16 libaio, cold"
    rand_scenario 4-nbd-rand-cold-tcp "$TCPURI" "$QT" w_randcold 1.2 "4 jobs x QD16 libaio, cold, TCP"
    rand_scenario 4-nbd-rand-qd1 "$U" "$QS" w_randqd1 1.0 "1 job x QD1 libaio, cold"
    rand_scenario 4-nbd-rand-qd1-tcp "$TCPURI" "$QT" w_randqd1 1.0 "1 job x QD1 libaio, cold, TCP"
    if [ $QUICK = 0 ] && want 4-nbd-rand-warm 50 "(4) NBD random 4 KiB, warm"; then
        scenario 4-nbd-rand-warm IOPS "(4) NBD random 4 KiB O_DIRECT, 4 jobs x QD16 libaio, warm (first $WARM_MIB MiB read once before)"
        tool netdiskfs "m_nd '$U'" w_randwarm
        tool nbdfuse "m_nbdfuse '$U'" w_randwarm 3
        tool qemu-storage-daemon "m_qsd $QS" w_randwarm
        run_scenario
    fi
    if [ $QUICK = 0 ] && want 5-nbd-write 35 "(5) NBD seq write 1 MiB + fsync"; then
        head -c $((WRITE_MIB << 20)) /dev/zero >"$T/w.img"
        nbdkit_unix rw file "$T/w.img"
        WS=$(nbdkit_sock rw) WU="nbd+unix:///?socket=$(nbdkit_sock rw)"
        scenario 5-nbd-write MB/s "(5) NBD seq write 1 MiB + fsync, Unix socket ($WRITE_MIB MiB)"
        tool netdiskfs "m_nd '$WU'" "w_seqwrite $WRITE_MIB"
        tool nbdfuse "m_nbdfuse '$WU' rw" "w_seqwrite $WRITE_MIB" 1.0
        tool qemu-storage-daemon "m_qsd driver=nbd,server.type=unix,server.path=$WS rw" "w_seqwrite $WRITE_MIB"
        tool "nbdcopy -C 1" - "r_nbdcopy '$T/src.img' '$WU' $((WRITE_MIB << 20))"
        run_scenario
        nbdkit_stop rw
        rm -f "$T/w.img"
    fi
    nbdkit_stop ro
    nbdkit_stop rotcp
    nbdkit_stop delay
}

# --- (6) HTTP and HTTPS ----------------------------------------------------
NGX_PID= NGX_PORT=0 NGX_TLS=0 NGX_CA=
nginx_bench_start() {
    local d=$TMP/nginx
    have nginx || { echo "not installed: nginx (nginx-light)"; return 1; }
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/key.pem" -out "$d/cert.pem" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$d/openssl.log" 2>&1 ||
        { echo "openssl: $(tail -n 1 "$d/openssl.log")"; return 1; }
    NGX_PORT=$(free_port) NGX_TLS=$(free_port) NGX_CA=$d/cert.pem
    cat >"$d/nginx.conf" <<NGINX
user root root;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $d/client_temp;
    proxy_temp_path $d/proxy_temp;
    fastcgi_temp_path $d/fastcgi_temp;
    uwsgi_temp_path $d/uwsgi_temp;
    scgi_temp_path $d/scgi_temp;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGX_PORT;
        listen 127.0.0.1:$NGX_TLS ssl;
        server_name localhost;
        ssl_certificate $d/cert.pem;
        ssl_certificate_key $d/key.pem;
        root $T;
        autoindex on;
    }
}
NGINX
    nginx -c "$d/nginx.conf" -e "$d/error.log" >"$d/start.log" 2>&1 ||
        { echo "nginx: $(cat "$d/start.log" "$d/error.log" | tail -n 1)"; return 1; }
    wait_for 10 test -s "$d/nginx.pid" || { echo "nginx wrote no pidfile"; return 1; }
    NGX_PID=$(cat "$d/nginx.pid")
    wait_for 10 curl -sf --noproxy '*' -o /dev/null -r 0-0 "http://127.0.0.1:$NGX_PORT/disk.img" ||
        { echo "nginx does not answer"; return 1; }
}
nginx_bench_stop() {
    [ -n "$NGX_PID" ] || return 0
    kill -TERM "$NGX_PID" 2>/dev/null
    wait_for 10 sh -c "! kill -0 $NGX_PID" || kill -KILL "$NGX_PID" 2>/dev/null
    NGX_PID=
}
cleanup_fn nginx_bench_stop

http_scenarios() {
    local why= H HS
    selected 6-http || selected 6-https || return 0
    unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY no_proxy NO_PROXY
    nginx_bench_start >"$TMP/nginx.err" 2>&1 || why="nginx did not start: $(tail -n 1 "$TMP/nginx.err")"
    H=http://127.0.0.1:$NGX_PORT/disk.img HS=https://localhost:$NGX_TLS/disk.img
    if want 6-http 60 "(6) HTTP seq read"; then
        scenario 6-http MB/s "(6) HTTP seq read 1 MiB (nginx)"
        tool netdiskfs "m_nd '$H'" "w_seqread $IMG_MIB"
        tool "curl -o /dev/null" - "r_curl '$H'" 0.8
        tool qemu-storage-daemon "m_qsd driver=http,url=$H" "w_seqread $IMG_MIB" 2
        tool "httpdirfs (no cache)" "m_httpdirfs '$H'" "w_seqread $IMG_MIB" 10
        if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    fi
    if want 6-https 70 "(6) HTTPS seq read"; then
        scenario 6-https MB/s "(6) HTTPS seq read 1 MiB (nginx, TLS)"
        tool netdiskfs "m_nd '$HS' cainfo=$NGX_CA" "w_seqread $IMG_MIB"
        tool "curl -o /dev/null" - "r_curl '$HS' --cacert '$NGX_CA'" 0.8
        tool qemu-storage-daemon "m_qsd driver=https,url=$HS,sslverify=off" "w_seqread $IMG_MIB" 2
        tool "httpdirfs (no cache)" "m_httpdirfs '$HS' --cacert '$NGX_CA'" "w_seqread $IMG_MIB" 10
        if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    fi
    nginx_bench_stop
}

# --- (7) SFTP ----------------------------------------------------------------
ssh_scenarios() {
    local U K Q why=
    selected 7-sftp || selected 7-sftp-odirect || return 0
    if ! [ -x /usr/sbin/sshd ]; then
        why="not installed: sshd (openssh-server)"
    elif ! soft sshd_setup || ! soft sshd_start || ! soft agent_start; then
        why="sshd did not start: $(soft_why)"
    fi
    SSH_OPTS=(-i "${SSH_CLIENT_KEY:-}" -o UserKnownHostsFile="${SSHD_KNOWN_HOSTS:-}"
        -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes)
    U="ssh://root@127.0.0.1:${SSHD_PORT:-22}$IMG"
    K="known-hosts=${SSHD_KNOWN_HOSTS:-},identity=${SSH_CLIENT_KEY:-}"
    # qemu's ssh driver authenticates through ssh-agent only.
    Q="driver=ssh,server.host=127.0.0.1,server.port=${SSHD_PORT:-22},path=$IMG,user=root,host-key-check.mode=none"
    if want 7-sftp 100 "(7) SFTP seq read"; then
        scenario 7-sftp MB/s "(7) SFTP seq read 1 MiB (OpenSSH sshd)"
        tool netdiskfs "m_nd '$U' '$K'" "w_seqread $IMG_MIB"
        tool sshfs m_sshfs "w_seqread $IMG_MIB" 1.5
        tool "sftp get" - r_sftp
        tool scp - r_scp
        tool qemu-storage-daemon "m_qsd '$Q'" "w_seqread $IMG_MIB"
        if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    fi
    if want 7-sftp-odirect 30 "(7) SFTP 4 KiB O_DIRECT"; then
        scenario 7-sftp-odirect MB/s "(7) SFTP seq read 4 KiB O_DIRECT"
        tool netdiskfs "m_nd '$U' '$K'" w_direct4k
        tool sshfs m_sshfs w_direct4k 5
        if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    fi
    [ -n "${SSHD_DIR:-}" ] && sshd_stop
    return 0
}

# --- (8) FTP, iSCSI, Gluster -------------------------------------------------
VSFTPD_PID= FTP_USER= FTP_PASS= FTP_PORT=0
vsftpd_bench_start() {
    local d=$TMP/vsftpd
    have vsftpd || { echo "not installed: vsftpd"; return 1; }
    mkdir -p "$d/empty"
    chmod 755 "$d/empty"
    FTP_PORT=$(free_port)
    FTP_USER=ndbench$$
    FTP_PASS=bench-$RANDOM$RANDOM
    echo "$FTP_PASS" >"$d/password"
    for _ in $(seq 1 50); do
        useradd -M -d "$T" -s /bin/bash "$FTP_USER" 2>/dev/null && break
        id "$FTP_USER" >/dev/null 2>&1 && break
        sleep 0.1
    done
    id "$FTP_USER" >/dev/null 2>&1 || { echo "useradd $FTP_USER failed"; return 1; }
    cleanup_fn "userdel $FTP_USER 2>/dev/null"
    echo "$FTP_USER:$FTP_PASS" | chpasswd -c SHA512 || { echo "chpasswd failed"; return 1; }
    cat >"$d/vsftpd.conf" <<VSFTPD
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$FTP_PORT
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
local_root=$T
chroot_local_user=YES
secure_chroot_dir=$d/empty
pam_service_name=vsftpd
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=30000
pasv_max_port=30100
seccomp_sandbox=NO
xferlog_enable=NO
VSFTPD
    vsftpd "$d/vsftpd.conf" 0>>"$d/error.log" >>"$d/error.log" 2>&1 &
    VSFTPD_PID=$!
    wait_for 10 sh -c "ss -Hltn 'sport = :$FTP_PORT' | grep -q ." ||
        { echo "vsftpd did not listen: $(tail -n 1 "$d/error.log")"; return 1; }
}
vsftpd_bench_stop() {
    [ -n "$VSFTPD_PID" ] || return 0
    kill -TERM "$VSFTPD_PID" 2>/dev/null
    wait_for 10 sh -c "! kill -0 $VSFTPD_PID" || kill -KILL "$VSFTPD_PID" 2>/dev/null
    wait "$VSFTPD_PID" 2>/dev/null
    VSFTPD_PID=
}
cleanup_fn vsftpd_bench_stop

# backend_has SCHEME: does this netdiskfs serve SCHEME (its --help)?
backend_has() { "$ND" --help 2>/dev/null | grep -Eq "^ +schemes:.* $1( |\$)"; }

ftp_scenario() {
    local why= F C
    want 8-ftp 40 "(8) FTP seq read" || return 0
    scenario 8-ftp MB/s "(8) FTP seq read 1 MiB (vsftpd)"
    if ! backend_has ftp; then
        tool netdiskfs - true
        skip_scenario "netdiskfs has no FTP backend"
        return 0
    fi
    vsftpd_bench_start >"$TMP/vsftpd.err" 2>&1 || why="vsftpd did not start: $(tail -n 1 "$TMP/vsftpd.err")"
    F=ftp://$FTP_USER@127.0.0.1:$FTP_PORT/disk.img
    C=ftp://$FTP_USER:$FTP_PASS@127.0.0.1:$FTP_PORT/disk.img
    tool netdiskfs "m_nd '$F' password-file=$TMP/vsftpd/password" "w_seqread $IMG_MIB"
    tool "curl -o /dev/null" - "r_curl '$C'"
    tool qemu-storage-daemon "m_qsd driver=ftp,url=$C" "w_seqread $IMG_MIB"
    if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    vsftpd_bench_stop
}

iscsi_scenario() {
    local port iqn=iqn.2026-01.org.netdiskfs:bench U
    want 8-iscsi 50 "(8) iSCSI seq read" || return 0
    scenario 8-iscsi MB/s "(8) iSCSI seq read 1 MiB (tgtd)"
    if ! backend_has iscsi; then
        tool netdiskfs - true
        skip_scenario "netdiskfs has no iSCSI backend"
        return 0
    fi
    port=$(free_port)
    U=iscsi://127.0.0.1:$port/$iqn/1
    tool netdiskfs "m_nd '$U'" "w_seqread $IMG_MIB"
    tool qemu-storage-daemon "m_qsd driver=iscsi,transport=tcp,portal=127.0.0.1:$port,target=$iqn,lun=1" "w_seqread $IMG_MIB" 2
    tool "iscsi-perf -m 8" - "r_iscsiperf '$U'" 0.9
    if ! soft tgtd_start "$port"; then
        skip_scenario "tgtd did not start: $(soft_why)"
    elif ! soft tgt_target "$port" 1 "$iqn" || ! soft tgt_lun "$port" 1 1 "$IMG" readonly; then
        skip_scenario "tgtadm failed: $(soft_why)"
    else
        run_scenario
    fi
    tgtd_stop "$port"
}

gluster_scenario() {
    local vol=ndbench why=
    want 8-gluster 110 "(8) Gluster seq read" || return 0
    scenario 8-gluster MB/s "(8) Gluster seq read 1 MiB (one-brick volume)"
    if ! backend_has gluster; then
        tool netdiskfs - true
        skip_scenario "netdiskfs has no Gluster backend"
        return 0
    fi
    tool netdiskfs "m_nd gluster://127.0.0.1/$vol/disk.img" "w_seqread $IMG_MIB"
    tool "glusterfs (FUSE)" "m_glusterfs $vol --read-only" "w_seqread $IMG_MIB" 1.0
    tool qemu-storage-daemon "m_qsd driver=gluster,volume=$vol,path=disk.img,server.0.type=inet,server.0.host=127.0.0.1,server.0.port=24007" \
        "w_seqread $IMG_MIB" 3
    if ! have glusterd; then
        why="not installed: glusterd (glusterfs-server)"
    elif ! soft glusterd_start "$T/gluster" || ! soft glusterd_volume $vol; then
        why="glusterd did not start: $(soft_why)"
    else
        # Copy the image in through the native client.
        : >"$REASON"
        if ! m_glusterfs $vol || ! timeout 120 cp "$IMG" "$MNT/disk.img" 2>"$TMP/cp.err"; then
            why="could not copy the image into the volume: $(cat "$REASON" "$TMP/cp.err" | head -n 1)"
        fi
        stop_mount
    fi
    if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    glusterd_stop
}

. "$TOP/tests/bench/layers.sh"
. "$TOP/tests/bench/ceph-nfs.sh"

# --- report ----------------------------------------------------------------
machine() {
    local cpu mem
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "$(nproc) x ${cpu:-unknown CPU}, $mem RAM, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
}

report() {
    local date mach img rounds ver
    [ -s "$META" ] && [ -s "$RUNS" ] || { echo "no results in $OUT"; return 1; }
    IFS=$'\t' read -r date mach img rounds ver < <(sed -n 2p "$META")
    awk -F'\t' -v OFS=',' -v rsslim="$RSS_LIMIT_MIB" -v csv="$OUT/bench.csv" \
        -v md="$OUT/bench.md" -v txt="$OUT/bench.txt" -v dat="$TMP/chart.dat" \
        -v head="netdiskfs bench, $date, $mach, image $img MiB on tmpfs, $rounds round(s), $ver" '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function fmt(v) { return v == "" ? "" : (v >= 100 ? sprintf("%.0f", v) : sprintf("%.1f", v)) }
    function q(s) { return "\"" s "\"" }
    FNR == 1 { f++; next }
    f == 1 { ns++; sid[ns] = $1; sunit[$1] = $2; sdesc[$1] = $3; next }
    f == 2 { nt[$1]++; k = $1 SUBSEP nt[$1]; tname[k] = $2; ttarget[k] = $3; next }
    {
        key = $1 SUBSEP $2
        if ($4 == "ok") { n[key]++; vals[key, n[key]] = $5 }
        else { bad[key]++; if (!(key in why)) why[key] = $4 ": " $8 }
        if ($8 != "" && $4 == "ok" && !(key in note)) note[key] = $8
        if ($6 != "" && $6 > rss[$1]) rss[$1] = $6
        if ($2 == "all") why[key] = $4 ": " $8
    }
    END {
        print "scenario,description,tool,unit,median,min,max,runs,ratio_netdiskfs_over_tool,target,verdict,netdiskfs_peak_rss_mib,note" > csv
        printf "%s\n\n", head > txt
        hdr = sprintf("%-19s %-22s %8s %-5s %-13s %7s %-8s %-7s %6s  %s", "scenario", "tool", "median", "unit", \
            "min-max", "nd/peer", "target", "verdict", "ndRSS", "note")
        print hdr > txt
        gsub(/./, "-", hdr); print hdr > txt
        printf "| scenario | tool | median | min–max | netdiskfs / peer | target | verdict | netdiskfs peak RSS | note |\n" > md
        printf "|---|---|---:|---|---:|---|---|---:|---|\n" > md
        for (s = 1; s <= ns; s++) {
            id = sid[s]; u = sunit[id]
            if ((id, "all") in why) {
                printf "%-19s %s\n", id, why[id, "all"] > txt
                printf "| %s | | | | | | %s | | |\n", id, why[id, "all"] > md
                print q(id), q(sdesc[id]), "", u, "", "", "", 0, "", "", "skipped", "", q(why[id, "all"]) > csv
                continue
            }
            ndk = id SUBSEP "netdiskfs"
            ndmed = ""
            if (n[ndk] > 0) { for (i = 1; i <= n[ndk]; i++) tmp[i] = vals[ndk, i]; ndmed = median(tmp, n[ndk]) }
            for (t = 1; t <= nt[id]; t++) {
                name = tname[id, t]; tg = ttarget[id, t]; key = id SUBSEP name
                med = mn = mx = ""; ratio = ""; verdict = ""; nn = n[key] + 0; tgs = ""
                if (nn > 0) {
                    for (i = 1; i <= nn; i++) tmp[i] = vals[key, i]
                    med = median(tmp, nn); mn = tmp[1]; mx = tmp[nn]
                    if (name != "netdiskfs" && ndmed != "" && med > 0) ratio = sprintf("%.2f", ndmed / med)
                }
                if (tg != "-" && name != "netdiskfs") {
                    tgs = ">=" tg
                    if (ratio == "") verdict = "n/a"
                    else verdict = (ratio + 0 >= tg + 0) ? "met" : "MISSED"
                }
                rs = ""
                if (name == "netdiskfs" && rss[id] != "") {
                    rs = sprintf("%.0f", rss[id] / 1024)
                    tgs = "RSS<=" rsslim
                    verdict = (rs + 0 <= rsslim + 0) ? "met" : "MISSED"
                }
                nt2 = (nn > 0) ? note[key] : why[key]
                if (nn > 0 && bad[key] > 0)
                    nt2 = (nt2 != "" ? nt2 "; " : "") bad[key] " of " nn + bad[key] " runs " why[key]
                printf "%-19s %-22s %8s %-5s %-13s %7s %-8s %-7s %6s  %s\n", (t == 1 ? id : ""), name, \
                    (nn ? fmt(med) : "-"), (nn ? u : ""), (nn ? fmt(mn) "-" fmt(mx) : ""), \
                    (ratio != "" ? ratio "x" : ""), tgs, verdict, (rs != "" ? rs "M" : ""), nt2 > txt
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", (t == 1 ? id : ""), name, \
                    (nn ? fmt(med) " " u : "–"), (nn ? fmt(mn) "–" fmt(mx) : ""), \
                    (ratio != "" ? ratio "×" : ""), (rs != "" ? "RSS ≤ " rsslim " MiB" : (tgs != "" ? "≥ " tg "×" : "")), verdict, \
                    (rs != "" ? rs " MiB" : ""), nt2 > md
                print q(id), q(sdesc[id]), q(name), u, fmt(med), fmt(mn), fmt(mx), nn, ratio, \
                    (tg == "-" ? "" : tg), verdict, rs, q(nt2) > csv
                if (ratio != "") printf "\"%s: %s\" %s %s\n", id, name, ratio, (tg == "-" ? "NaN" : tg) > dat
            }
        }
        printf "\nScenarios:\n" > txt
        for (s = 1; s <= ns; s++) printf "  %-20s %s\n", sid[s], sdesc[sid[s]] > txt
    }' "$SCENS" "$TOOLS" "$RUNS"
    { printf '**%s** — %s; image %s MiB on tmpfs; %s round(s); median of the runs.\n\n' \
        "$date" "$mach; $ver" "$img" "$rounds"; cat "$OUT/bench.md"; } >"$TMP/bench.md"
    mv "$TMP/bench.md" "$OUT/bench.md"
    cat "$OUT/bench.txt"
    chart
    echo
    echo "CSV: $OUT/bench.csv   markdown: $OUT/bench.md   runs: $OUT/runs.tsv"
}

chart() {
    rm -f "$OUT/bench.png"
    if ! have gnuplot; then
        echo "chart: not drawn: gnuplot is not installed (gnuplot-nox)"
        return 0
    fi
    [ -s "$TMP/chart.dat" ] || { echo "chart: not drawn: no ratio to plot"; return 0; }
    gnuplot >"$TMP/gnuplot.log" 2>&1 <<EOF
set terminal pngcairo size 1400,820 font "sans,9" noenhanced
set output "$OUT/bench.png"
set title "netdiskfs / peer (median throughput or IOPS; > 1 = netdiskfs faster); points: target of the issue"
set style fill solid 0.6 border -1
set boxwidth 0.7
set logscale y 2
set grid ytics
set ylabel "ratio netdiskfs / peer"
set xtics rotate by -60 left
set key top left
set bmargin 18
set rmargin 10
plot "$TMP/chart.dat" using 0:2:xtic(1) with boxes title "netdiskfs / peer", \
     "" using 0:3 with points pt 7 ps 1.2 lc rgb "red" title "target", \
     1 with lines lc rgb "black" dt 2 notitle
EOF
    if [ -s "$OUT/bench.png" ]; then
        echo "chart: $OUT/bench.png"
    else
        echo "chart: gnuplot failed: $(tail -n 2 "$TMP/gnuplot.log")"
    fi
}

# --- (9) small random writes (issue 20) -------------------------------------
# w_randwrite FIO-ARGS...: 4 KiB random writes over WRITE_MIB, a quarter of
# it written, fsync at the end; MB/s, and the bytes the server was asked
# to read meanwhile (when it logs) in the note.
w_randwrite() {
    local rc v n=0 c start
    start=$(stat -c %s "$TMP/wr.nbdlog" 2>/dev/null || echo 0)
    timeout -k 5 90 fio --name=bench --filename="$MF" --rw=randwrite --bs=4k --ioengine=psync \
        --size=${WRITE_MIB}m --io_size=$((WRITE_MIB / 4))m --end_fsync=1 --randrepeat=0 \
        --output-format=terse --terse-version=3 "$@" >"$TMP/fio.out" 2>"$TMP/fio.err"
    rc=$?
    for c in $(tail -c +$((start + 1)) "$TMP/wr.nbdlog" 2>/dev/null | grep -ao ' Read id=[0-9]* offset=0x[0-9a-f]* count=0x[0-9a-f]*' | sed 's/.*count=//'); do
        n=$((n + c))
    done
    v=$(awk -F';' 'NF > 50 { printf "%.1f", $48 * 1024 / 1e6 }' "$TMP/fio.out")
    if [ $rc != 0 ] || [ -z "$v" ] || [ "$v" = 0.0 ]; then
        echo "error fio: $(cat "$TMP/fio.err" "$TMP/fio.out" | grep -v '^$' | head -n 1)"
    else
        echo "ok $v$([ -s "$TMP/wr.nbdlog" ] && echo " fetched $((n >> 10)) KiB")"
    fi
}
write_scenarios() {
    local WU WP
    head -c $((WRITE_MIB << 20)) /dev/urandom >"$T/wr.img"
    nbdkit_unix wr --filter=log file "$T/wr.img" logfile="$TMP/wr.nbdlog"
    WU="nbd+unix:///?socket=$(nbdkit_sock wr)"
    # The buffered case without the log filter: its cost per request
    # would hide the kernel's batching.
    nbdkit_unix wrp file "$T/wr.img"
    WP="nbd+unix:///?socket=$(nbdkit_sock wrp)"
    if want 14-nbd-wb-randwrite 40 "(14) NBD random 4 KiB O_DIRECT writes, cache=writeback"; then
        scenario 14-nbd-wb-randwrite MB/s "(14) NBD random 4 KiB O_DIRECT writes + fsync, cache=writeback ($((WRITE_MIB / 4)) of $WRITE_MIB MiB)"
        tool netdiskfs "m_nd '$WU' cache=writeback" "w_randwrite --direct=1"
        tool nbdfuse "m_nbdfuse '$WU' rw" "w_randwrite --direct=1"
        run_scenario
    fi
    if want 14-nbd-buf-randwrite 40 "(14) NBD random 4 KiB buffered writes"; then
        scenario 14-nbd-buf-randwrite MB/s "(14) NBD random 4 KiB buffered writes + fsync, -o kernel-cache=writeback ($((WRITE_MIB / 4)) of $WRITE_MIB MiB)"
        tool netdiskfs "ND_MOUNT_O=kernel-cache=writeback m_nd '$WP'" w_randwrite
        tool nbdfuse "m_nbdfuse '$WP' rw" w_randwrite
        tool "netdiskfs writethrough" "m_nd '$WP'" w_randwrite
        run_scenario
    fi
    nbdkit_stop wr
    nbdkit_stop wrp
    rm -f "$T/wr.img"
}

# --- (15) read amplification (issue 20) -----------------------------------
# A guest's boot-like reads on an ext4 disk: the image is made by
# mkfs.ext4 -d from a fixed tree (4000 small files of 0.2-128 KiB in 40
# directories and an 8 MiB "kernel", all from a seeded generator), served
# read-only by nbdkit with its log filter. The file of each tool is a loop
# device with direct I/O (as qemu cache=none reads it: no page cache on
# the FUSE file), mounted ro; `ls -lR`, then every file of 20 of the 40
# directories and the kernel are read. Value: bytes the server was asked
# for (nbdkit's log) / bytes the loop device read; lower is better.
amp_image() {
    local tree=$TMP/amp-tree
    rm -rf "$tree"
    python3 - "$tree" <<'PYEOF' || return 1
import os, random, sys
root = sys.argv[1]
rng = random.Random(15)
for d in range(40):
    dd = os.path.join(root, "usr/lib/d%02d" % d)
    os.makedirs(dd)
    for f in range(100):
        size = rng.randrange(200, 16384) if rng.random() < 0.85 else rng.randrange(16384, 131072)
        with open(os.path.join(dd, "f%03d" % f), "wb") as fh:
            fh.write(rng.randbytes(size))
os.makedirs(os.path.join(root, "boot"))
with open(os.path.join(root, "boot/vmlinuz"), "wb") as fh:
    fh.write(rng.randbytes(8 << 20))
PYEOF
    find "$tree" -exec touch -h -d @1700000000 {} +
    E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -d "$tree" -L amp -U 15151515-1515-1515-1515-151515151515 \
        -E hash_seed=15151515-1515-1515-1515-151515151515,lazy_itable_init=0,lazy_journal_init=0 \
        "$T/amp.img" 256M >"$TMP/mkfs.log" 2>&1 || { tail -n 1 "$TMP/mkfs.log"; return 1; }
    rm -rf "$tree"
}
# Bytes the server was asked to read (nbdkit's log filter) so far.
amp_server_bytes() {
    grep -ao ' Read id=[0-9]* offset=0x[0-9a-f]* count=0x[0-9a-f]*' "$TMP/amp.nbdlog" |
        python3 -c 'import sys; print(sum(int(l.split("count=")[1], 16) for l in sys.stdin))'
}
# Bytes LOOP has read since it was set up (sectors of 512 bytes; the
# shell's arithmetic, as awk prints large numbers in %e).
amp_loop_read() { local f; read -r _ _ f _ </sys/block/"${1#/dev/}"/stat; echo $((f * 512)); }
# amp_reads DIR: the reads of the workload; the step that failed, if any.
amp_reads() {
    cd "$1" || { echo "cd"; return; }
    timeout 120 ls -lR usr/lib >/dev/null || { echo "ls -lR rc $?"; return; }
    find usr/lib/d0* usr/lib/d1* -type f | sort | timeout 120 xargs cat >/dev/null ||
        { echo "cat of the files rc $?"; return; }
    timeout 60 cat boot/vmlinuz >/dev/null || echo "cat boot/vmlinuz rc $?"
}
w_amp() {
    local loop s0 s1 r0 r1 fs=$TMP/amp-fs why=
    mkdir -p "$fs"
    s0=$(amp_server_bytes)
    loop=$(losetup -f --show -r --direct-io=on "$MF" 2>"$TMP/raw.err") ||
        { echo "error losetup: $(head -n 1 "$TMP/raw.err")"; return; }
    r0=$(amp_loop_read "$loop")
    if mount -o ro,noload "$loop" "$fs" 2>"$TMP/raw.err"; then
        why=$(amp_reads "$fs" 2>>"$TMP/raw.err")
        umount "$fs" 2>>"$TMP/raw.err" || why=${why:-umount failed}
    else
        why="mount of $loop failed"
    fi
    r1=$(amp_loop_read "$loop")
    [ "$(cat /sys/block/"${loop#/dev/}"/loop/dio 2>/dev/null)" = 1 ] || echo "direct I/O off" >>"$REASON"
    losetup -d "$loop"
    s1=$(amp_server_bytes)
    [ -z "$why" ] || { echo "error $why: $(head -n 1 "$TMP/raw.err")"; return; }
    awk -v s=$((s1 - s0)) -v r=$((r1 - r0)) 'BEGIN {
        if (r <= 0) { print "error the loop device read nothing"; exit }
        printf "ok %.2f %.1f MiB fetched for %.1f MiB read\n", s / r, s / 1048576, r / 1048576 }'
}
amp_scenario() {
    local U S why=
    want 15-amp 60 "(15) read amplification, ext4 boot-like reads" || return 0
    amp_image >"$TMP/amp.err" 2>&1 || why="mkfs.ext4 -d failed: $(tail -n 1 "$TMP/amp.err")"
    scenario 15-amp x "(15) read amplification: server bytes / bytes read by a direct-I/O loop device over the file, ext4 (mkfs -d, 4000 small files): ls -lR, cat of half the files and an 8 MiB file (lower is better)"
    if [ -z "$why" ]; then
        nbdkit_unix amp -r --filter=log file "$T/amp.img" logfile="$TMP/amp.nbdlog"
        U="nbd+unix:///?socket=$(nbdkit_sock amp)" S=$(nbdkit_sock amp)
    fi
    tool netdiskfs "m_nd '$U'" w_amp
    tool nbdfuse "m_nbdfuse '$U'" w_amp
    tool qemu-storage-daemon "m_qsd driver=nbd,server.type=unix,server.path=$S" w_amp
    if [ -n "$why" ]; then skip_scenario "$why"; else run_scenario; fi
    [ -n "$why" ] || nbdkit_stop amp
    rm -f "$T/amp.img"
}

# --- main --------------------------------------------------------------------
if [ $REPORT_ONLY = 1 ]; then
    report
    exit
fi
setup
echo "netdiskfs bench: $(machine)"
echo "image $IMG_MIB MiB on tmpfs, $PAIRS round(s), output in $OUT"
trap report_and_exit EXIT
report_and_exit() {
    local rc=$?
    trap - EXIT
    report || true
    (exit $rc)
    _run_cleanups
}

nbd_scenarios
# --quick runs the two NBD scenarios, or what --only names.
if [ $QUICK = 0 ] || [ -n "$ONLY" ]; then
    http_scenarios
    ssh_scenarios
    ftp_scenario
    iscsi_scenario
    gluster_scenario
    cache_scenarios
    overlay_scenarios
    qcow2_scenarios
    rbd_scenarios
    nfs_scenario
    write_scenarios
    amp_scenario
fi
echo "total: ${SECONDS}s"

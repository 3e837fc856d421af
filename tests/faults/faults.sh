#!/bin/bash
# faults.sh: the fault matrix. For every backend with a server here (nbd via
# nbdkit, iscsi via tgtd, ssh via sshd, gluster via glusterd, http via
# nginx, ftp via vsftpd, rbd via a one-node Ceph (the OSD is the server),
# nfs via nfs-ganesha) a workload runs on its entry while a fault hits:
#   a  the server killed and restarted within reconnect-delay
#   b  the server left down past reconnect-delay, then restarted
#   c  the server frozen (SIGSTOP) for longer than timeout, then thawed
#   d  the server answering with errors for a while (nbdkit's error
#      filter, a LUN made read-only, nginx 503, an unreadable FTP file,
#      an NFS file made immutable; none for rbd)
#   e  SIGHUP reloads changing the entry (its readahead) in a loop; after
#      each, a new open of the name reads the server's bytes
#   f  kill -9 of the daemon (cache=writethrough), then a new mount
# The workload is fio --verify (sequential 64 KiB O_DIRECT writes, then
# their read-back) on a writable entry, a read-and-compare loop against
# the server's file (reader.py) on a read-only one. A cell fails on any
# wrong byte, on any request slower than reconnect-delay + timeout + slack,
# on an acknowledged write missing from the server's file (fio's verify
# state replayed against it), or when the entry does not serve again
# once the server is back. It prints a table backend x fault -> outcome,
# with the time of the first error after the fault.
#
# Usage: faults.sh [-b "nbd iscsi ssh gluster http ftp rbd nfs"] [-f "a b c d e f"]
# `make faults` runs the whole matrix; tests/func/faults-short.sh a subset.
# Gluster and Ceph hold fixed ports: run it under `flock /tmp/nd-heavy.lock`.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/tgtd.sh"
. "$TOP/tests/lib/sshd.sh"
. "$TOP/tests/lib/glusterd.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/vsftpd.sh"
requires fio
requires python3

BACKENDS="nbd iscsi ssh gluster http ftp rbd nfs"
FAULTS="a b c d e f"
while getopts "b:f:" o; do
    case $o in
    b) BACKENDS=$OPTARG ;;
    f) FAULTS=$OPTARG ;;
    *) echo "usage: $0 [-b BACKENDS] [-f FAULTS]" >&2; exit 2 ;;
    esac
done

DELAY=${FAULTS_DELAY:-4}   # reconnect-delay of every entry
TIMEOUT=${FAULTS_TIMEOUT:-2}
SLACK=${FAULTS_SLACK:-4}   # 2 shared CPUs, servers restarting
BOUND=$((DELAY + TIMEOUT + SLACK))
# Once reconnect-delay has run out without a reconnect, QEMU fails every
# request at once until a reconnect succeeds.
PROBE_BOUND=${FAULTS_PROBE_BOUND:-2}
SIZE_MB=16 # what the workload covers
DISK_MB=64 # writable disks: the tail stays untouched, for the probe
RATE=3m # fio's write phase then spans the fault (about 5 s)
MNT=$TMP/mnt
TAB=$TMP/tab
READER=$TOP/tests/faults/reader.py
declare -A URL ORACLE RO RA OUT VERDICT
FAILED=0

now() { date +%s.%N; }
# secs A B: B - A in seconds, one decimal
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# over X LIMIT: is X (seconds) above LIMIT?
over() { awk -v x="$1" -v l="$2" 'BEGIN { exit !(x > l) }'; }

# --- backends: <be>_up, _kill, _restart, _freeze, _thaw, _errors on|off --

nbd_up() {
    pattern "$TMP/nbd.img" $DISK_MB
    nbdkit_tcp nbd 127.0.0.1 --filter=error file "$TMP/nbd.img" \
        error-rate=1 error=EIO error-file="$TMP/nbd.errors"
    URL[nbd]=nbd://127.0.0.1:$(nbdkit_port nbd)
    ORACLE[nbd]=$TMP/nbd.img
}
nbd_kill() { nbdkit_kill nbd; }
nbd_restart() { nbdkit_restart nbd; }
nbd_freeze() { kill -STOP "$(nbdkit_pid nbd)"; }
nbd_thaw() { kill -CONT "$(nbdkit_pid nbd)"; }
nbd_errors() { if [ "$1" = on ]; then touch "$TMP/nbd.errors"; else rm -f "$TMP/nbd.errors"; fi; }

ISCSI_IQN=iqn.2026-01.test.netdiskfs:faults
iscsi_serve() {
    tgtd_start "$ISCSI_PORT"
    tgt_target "$ISCSI_PORT" 1 "$ISCSI_IQN"
    tgt_lun "$ISCSI_PORT" 1 1 "$TMP/iscsi.img"
}
iscsi_up() {
    pattern "$TMP/iscsi.img" $DISK_MB
    ISCSI_PORT=$(tgt_free_port)
    iscsi_serve
    URL[iscsi]=iscsi://127.0.0.1:$ISCSI_PORT/$ISCSI_IQN/1
    ORACLE[iscsi]=$TMP/iscsi.img
}
iscsi_pid() { cat "$TMP/tgtd.$ISCSI_PORT.pid"; }
iscsi_kill() { kill -KILL "$(iscsi_pid)"; wait_for 10 sh -c "! kill -0 $(iscsi_pid)"; }
iscsi_restart() { iscsi_serve; }
iscsi_freeze() { kill -STOP "$(iscsi_pid)"; }
iscsi_thaw() { kill -CONT "$(iscsi_pid)"; }
# A LUN made read-only answers every write with DATA PROTECT (tgt's
# online=0 was seen to change nothing).
iscsi_errors() {
    tgt "$ISCSI_PORT" --mode logicalunit --op update --tid 1 --lun 1 \
        --params readonly=$([ "$1" = on ] && echo 1 || echo 0)
}

ssh_up() {
    sshd_setup
    sshd_start
    agent_start
    pattern "$TMP/ssh.img" $DISK_MB
    URL[ssh]="ssh://127.0.0.1:$SSHD_PORT$TMP/ssh.img known-hosts=$SSHD_KNOWN_HOSTS"
    ORACLE[ssh]=$TMP/ssh.img
}
ssh_kill() { sshd_signal KILL; wait_for 10 sh -c "! kill -0 $(sshd_pid)"; rm -f "$SSHD_PIDFILE"; }
ssh_restart() { sshd_start; }
ssh_freeze() { sshd_signal STOP; }
ssh_thaw() { sshd_signal CONT; }

GL_VOL=ndf$$
gluster_up() {
    gluster_lsan_suppress
    glusterd_start "$TMP/gd"
    glusterd_volume $GL_VOL
    pattern "$GD_BRICK/disk.img" $DISK_MB
    URL[gluster]=gluster://127.0.0.1/$GL_VOL/disk.img
    ORACLE[gluster]=$GD_BRICK/disk.img
}
gluster_brick() {
    local f
    for f in /var/run/gluster/vols/$GL_VOL/*.pid; do cat "$f"; done 2>/dev/null | head -n 1
}
gluster_kill() { local p; p=$(gluster_brick); kill -KILL "$p"; wait_for 10 sh -c "! kill -0 $p"; }
gluster_restart() {
    _gd_cli volume start $GL_VOL force >>"$GD_DIR/cli.log" 2>&1 || fail "gluster: volume start force failed"
    gluster_brick >>"$GD_DIR/bricks.pids"
}
gluster_freeze() { kill -STOP "$(gluster_brick)"; }
gluster_thaw() { kill -CONT "$(gluster_brick)"; }

http_up() {
    nginx_start
    pattern "$NGINX_ROOT/disk.img" $SIZE_MB
    URL[http]=$NGINX_URL/flaky/disk.img
    ORACLE[http]=$NGINX_ROOT/disk.img
    RO[http]=1
}
http_kill() {
    local pids="$NGINX_PID $(nginx_workers)"
    kill -KILL $pids
    wait_for 10 sh -c "! kill -0 $NGINX_PID"
    NGINX_PID=
}
http_restart() { nginx_start; }
http_freeze() { kill -STOP "$NGINX_PID" $(nginx_workers); }
http_thaw() { kill -CONT "$NGINX_PID" $(nginx_workers); }
http_errors() { if [ "$1" = on ]; then touch "$NGINX_DIR/flaky-503"; else rm -f "$NGINX_DIR/flaky-503"; fi; }

ftp_up() {
    vsftpd_start plain
    FTP_SERVER=$FTP_N
    pattern "$FTP_ROOT/disk.img" $SIZE_MB
    chmod 644 "$FTP_ROOT/disk.img"
    URL[ftp]="$FTP_URL/disk.img username=$FTP_USER,password-file=$FTP_PASSFILE"
    ORACLE[ftp]=$FTP_ROOT/disk.img
    RO[ftp]=1
}
ftp_kill() { vsftpd_kill $FTP_SERVER; }
ftp_restart() { _vsftpd_run $FTP_SERVER; }
ftp_tree() { _vsftpd_tree "$(cat "$FTP_DIR/vsftpd-$FTP_SERVER.pid")"; }
ftp_freeze() { kill -STOP $(ftp_tree) 2>/dev/null; }
ftp_thaw() { kill -CONT $(ftp_tree) 2>/dev/null; }
ftp_errors() { chmod "$([ "$1" = on ] && echo 000 || echo 644)" "$FTP_ROOT/disk.img"; }

# The server's bytes are not a file: ORACLE is refreshed by rbd_oracle
# (rbd export) before a cell is judged. ceph.sh is sourced here so that a
# machine without Ceph can still run the other rows.
rbd_up() {
    . "$TOP/tests/lib/ceph.sh"
    ceph_start bluestore none
    pattern "$TMP/rbd.img" $DISK_MB
    ceph_rbd import --no-progress "$TMP/rbd.img" rbd/disk || fail "rbd import failed"
    URL[rbd]="rbd:rbd/disk:conf=$CEPH_CONF"
    ORACLE[rbd]=$TMP/rbd.img
}
rbd_oracle() {
    ceph_rbd export --no-progress rbd/disk - >"$TMP/rbd.new" 2>"$TMP/rbd.export.err" ||
        fail "rbd export failed: $(tail -n 1 "$TMP/rbd.export.err")"
    mv "$TMP/rbd.new" "$TMP/rbd.img"
}
rbd_osd() { cat "$CEPH_DIR/run/osd.0.pid"; }
rbd_kill() { ceph_osd_kill; }
rbd_restart() { ceph_osd_start; }
rbd_freeze() { kill -STOP "$(rbd_osd)"; }
rbd_thaw() { kill -CONT "$(rbd_osd)"; }

nfs_up() {
    . "$TOP/tests/lib/ganesha.sh"
    ganesha_start
    pattern "$GANESHA_EXPORT/disk.img" $DISK_MB
    URL[nfs]="nfs://127.0.0.1/export/disk.img?nfsport=$GANESHA_PORT&mountport=$GANESHA_MNTPORT"
    ORACLE[nfs]=$GANESHA_EXPORT/disk.img
}
nfs_kill() { ganesha_kill; }
nfs_restart() { ganesha_restart; }
# Every process of ganesha's session (rpcbind too).
nfs_freeze() { kill -STOP -- -"$(cat "$GANESHA_DIR/sid")"; }
nfs_thaw() { kill -CONT -- -"$(cat "$GANESHA_DIR/sid")"; }
# An immutable file: ganesha (root) gets EPERM for every write.
nfs_errors() { chattr "$([ "$1" = on ] && echo + || echo -)i" "$GANESHA_EXPORT/disk.img"; }

# --- the mount ---------------------------------------------------------

# A small cache (its readahead cap is a quarter of it), so that reads
# reach the server and the probe's block is never cached.
write_table() {
    local be u o
    : >"$TAB"
    for be in $BACKENDS; do
        u=${URL[$be]}
        o="reconnect-delay=$DELAY,timeout=$TIMEOUT,readahead=${RA[$be]}"
        o+=",cache-size=$([ -n "${RO[$be]:-}" ] && echo 4M || echo 16M)"
        case $u in # a URL with options after it: join with ours
        *" "*) echo "$be ${u%% *} ${u#* },$o" ;;
        *) echo "$be $u $o" ;;
        esac >>"$TAB"
    done
}

mount_all() {
    write_table
    nd_mount "$TAB" "$MNT" -v
    local be
    for be in $BACKENDS; do
        [ -e "$MNT/$be" ] || { show_log "$MNT.log"; fail "entry $be did not come up"; }
    done
}

# --- workloads -----------------------------------------------------------

# fio_job FILE CELLDIR SEED [ARGS...]: the verify job on FILE.
fio_job() {
    local file=$1 c=$2 seed=$3
    shift 3
    fio --name=v --filename="$file" --ioengine=psync --rw=write --bs=64k \
        --size=${SIZE_MB}M --verify=crc32c --verify_fatal=1 --randseed="$seed" \
        --aux-path="$c" --output-format=json "$@"
}

# start_workload BE CELLDIR SEED: in the background; $c/rc and $c/end
# appear when it ends.
start_workload() {
    local be=$1 c=$2 seed=$3
    rm -f "$c/stop"
    if [ -n "${RO[$be]:-}" ]; then
        ( python3 "$READER" "$MNT/$be" "${ORACLE[$be]}" "$c/stop" "$c/reader" 2>"$c/err"
          echo $? >"$c/rc"; now >"$c/end" ) &
    else
        ( fio_job "$MNT/$be" "$c" "$seed" --direct=1 --rate=$RATE --do_verify=1 \
            --output="$c/fio.json" 2>"$c/err" >/dev/null
          echo $? >"$c/rc"; now >"$c/end" ) &
    fi
    WORKLOAD=$!
}

# finish_workload BE CELLDIR: let a reader stop, wait (bounded) for the end.
finish_workload() {
    touch "$2/stop"
    local n=600
    while [ ! -e "$2/end" ] && ((n-- > 0)); do sleep 0.1; done
    [ -e "$2/end" ] || { kill "$WORKLOAD" 2>/dev/null; echo 124 >"$2/rc"; now >"$2/end"; }
    wait "$WORKLOAD" 2>/dev/null
}

# --- faults: each injects at its start and returns with the server back ---

fault_a() { "${1}_kill"; sleep 1; "${1}_restart"; sleep 2; }
# After the first error, with the server still down, one more read of a
# block nothing cached must fail at once: reconnect-delay has run out.
fault_b() {
    "${1}_kill"
    local n=$(( (BOUND + 3) * 10 ))
    while [ ! -e "$2/end" ] && ((n-- > 0)); do sleep 0.1; done
    [ -e "$2/end" ] && probe "$1" "$2"
    "${1}_restart"
}

# probe BE CELLDIR: a 64 KiB O_DIRECT read far from what the workload
# touched; "seconds result" into CELLDIR/probe.
probe() {
    local be=$1 c=$2 blk=$(( DISK_MB * 16 - 1 )) t r=served
    if [ -n "${RO[$be]:-}" ]; then
        blk=$(awk -v m=$((SIZE_MB * 16)) '$1 == "err_off" { print (int($2 / 65536) + m / 2) % m }' "$c/reader")
    fi
    t=$(now)
    timeout 60 dd if="$MNT/$be" of=/dev/null bs=64k count=1 skip="${blk:-0}" iflag=direct status=none 2>"$c/probe.err" ||
        r=$(grep -q "Input/output error" "$c/probe.err" && echo EIO || echo "error: $(head -c 80 "$c/probe.err")")
    echo "$(secs "$t" "$(now)") $r" >"$c/probe"
}
fault_c() { "${1}_freeze"; sleep $((TIMEOUT + 3)); "${1}_thaw"; sleep 2; }
fault_d() {
    "${1}_errors" on >>"$2/inject.log" 2>&1 || echo "could not make the server answer errors" >>"$2/inject.err"
    sleep 3
    "${1}_errors" off >>"$2/inject.log" 2>&1 || echo "could not make the server answer normally again" >>"$2/inject.err"
    sleep 2
}
# After each SIGHUP a new open of the name reads block 0 (written by the
# workload already): it must open (no ENOENT) and read the server's bytes.
fault_e() {
    local i
    ! declare -F "${1}_oracle" >/dev/null || "${1}_oracle"
    for i in $(seq 1 10); do
        RA[$1]=$((i % 2 ? 256 : 128))K
        write_table
        kill -HUP "$(cat "$MNT.pid")"
        sleep 0.3
        dd if="$MNT/$1" bs=64k count=1 iflag=direct status=none 2>>"$2/open.err" >"$2/blk0" ||
            { echo "a new open after a reload failed: $(tail -n 1 "$2/open.err")" >>"$2/inject.err"; continue; }
        head -c 65536 "${ORACLE[$1]}" | cmp -s - "$2/blk0" ||
            echo "a new open after a reload read other bytes than the server's" >>"$2/inject.err"
    done
    sleep 1
}
fault_f() { kill -KILL "$(cat "$MNT.pid")"; sleep 0.5; }

has_fault() {
    case $2 in
    a | b) declare -F "${1}_kill" >/dev/null ;;
    c) declare -F "${1}_freeze" >/dev/null ;;
    d) declare -F "${1}_errors" >/dev/null ;;
    *) true ;;
    esac
}

# --- judging a cell ---------------------------------------------------------

# json_ms FILE: the slowest completed request of fio's JSON, in seconds.
fio_max_s() {
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print("%.1f" % (max(j["write"]["clat_ns"]["max"], j["read"]["clat_ns"]["max"]) / 1e9))' "$1" 2>/dev/null || echo 0
}

# on_server BE CELLDIR SEED: every write fio completed is in the server's
# file (with its verify state after an error, else all of them).
on_server() {
    local be=$1 c=$2 seed=$3 state=()
    [ -e "$c/local-v-0-verify.state" ] || [ -e "$c/v-0-verify.state" ] && state=(--verify_state_load=1)
    [ "$(cat "$c/rc")" = 0 ] && state=()
    fio_job "${ORACLE[$be]}" "$c" "$seed" --verify_only "${state[@]}" \
        --output="$c/oracle.json" >/dev/null 2>"$c/oracle.err"
}

# recovered BE SEED: the entry serves the server's bytes again (bounded):
# its first 2 MiB, and a 64 KiB block near its end that neither the
# workload, the probe of (b) (the last block) nor another cell read, so it
# comes from the server, not the cache, and the next cell starts on a
# connected entry.
recovered() {
    local be=$1 blk
    blk=$(($(stat -c %s "${ORACLE[$be]}") / 65536 - 2 - $2))
    wait_for $((BOUND + DELAY)) bash -c "dd if='$MNT/$be' bs=1M count=2 iflag=direct status=none | cmp -s - '${ORACLE[$be]}' -n 2097152 &&
        dd if='$MNT/$be' bs=64k skip=$blk count=1 iflag=direct status=none |
        cmp -s - <(dd if='${ORACLE[$be]}' bs=64k skip=$blk count=1 status=none)"
}

# errname FILE: the errno of fio's first I/O error message, by name.
errname() {
    local m
    m=$(sed -n 's/^fio: io_u error on file [^:]*: \([^:]*\):.*/\1/p' "$1" | head -n 1)
    [ -n "$m" ] || { echo error; return; }
    python3 -c 'import errno, os, sys
names = {os.strerror(n): name for n, name in errno.errorcode.items()}
print(names.get(sys.argv[1], sys.argv[1]))' "$m"
}

# judge BE FAULT CELLDIR SEED TF: sets OUT and VERDICT for the cell.
judge() {
    local be=$1 f=$2 c=$3 seed=$4 tf=$5 rc end first maxs out="" bad=""
    rc=$(cat "$c/rc")
    end=$(cat "$c/end")
    if [ -n "${RO[$be]:-}" ]; then
        maxs=$(awk '$1 == "max_ms" { printf "%.1f", $2 / 1000 }' "$c/reader" 2>/dev/null)
        local wrong err errat
        wrong=$(awk '$1 == "wrong" { print $2 }' "$c/reader" 2>/dev/null)
        err=$(awk '$1 == "err" { print $2 }' "$c/reader" 2>/dev/null)
        errat=$(awk '$1 == "err_at" { print $2 }' "$c/reader" 2>/dev/null)
        [ -n "$wrong" ] || { wrong=?; bad+="reader failed ($(head -c 200 "$c/err")); "; }
        [ "$wrong" = 0 ] || bad+="$wrong reads with wrong bytes; "
        if [ "${err:--}" = - ]; then out="bytes right"
        else first=$(secs "$tf" "$errat"); out="$err after ${first}s"; fi
    else
        maxs=$(fio_max_s "$c/fio.json")
        if grep -qiE "verify|bad magic|crc32c" "$c/err"; then bad+="wrong bytes read back; "; fi
        if [ "$rc" = 0 ]; then out="bytes right"
        else
            first=$(secs "$tf" "$end")
            out="$(errname "$c/err") after ${first}s"
        fi
        if on_server "$be" "$c" "$seed"; then out+=", lost nothing"
        else bad+="acknowledged writes missing on the server ($(grep -m1 -iE 'verify|error' "$c/oracle.err")); "; fi
    fi
    if [ -s "$c/probe" ]; then
        local pt pr
        read -r pt pr <"$c/probe"
        out+="; then a new request: $pr in ${pt}s"
        over "$pt" $PROBE_BOUND && bad+="a request after the delay ran out took ${pt}s (bound ${PROBE_BOUND}s); "
    fi
    over "${maxs:-0}" $BOUND && bad+="a request took ${maxs}s; "
    [ -n "${first:-}" ] && over "$first" $BOUND && bad+="first error ${first}s after the fault; "
    [ "$rc" = 124 ] && bad+="the workload hung; "
    [ -s "$c/inject.err" ] && bad+="$(paste -sd ';' "$c/inject.err"); "
    out+=" (slowest ${maxs:-?}s)"
    OUT[$be.$f]=$out
    if [ -n "$bad" ]; then VERDICT[$be.$f]=FAIL; OUT[$be.$f]+=" -- ${bad%; }"; FAILED=1
    else VERDICT[$be.$f]=ok; fi
}

run_cell() {
    local be=$1 f=$2 seed=$3 c=$TMP/cell.$1.$2 tf
    mkdir -p "$c"
    if ! has_fault "$be" "$f"; then VERDICT[$be.$f]=n/a; OUT[$be.$f]="no way to inject it"; return; fi
    start_workload "$be" "$c" "$seed"
    sleep 1.5
    tf=$(now)
    "fault_$f" "$be" "$c"
    finish_workload "$be" "$c"
    if [ "$f" = f ]; then
        fusermount3 -u -z "$MNT" 2>/dev/null
        mount_all
    fi
    ! declare -F "${be}_oracle" >/dev/null || "${be}_oracle"
    judge "$be" "$f" "$c" "$seed" "$tf"
    if [ "${VERDICT[$be.$f]}" = ok ] && ! recovered "$be" "$seed"; then
        VERDICT[$be.$f]=FAIL; FAILED=1; OUT[$be.$f]+=" -- does not serve again once the server is back"
    fi
    printf '%-8s %s  %-4s %s\n' "$be" "$f" "${VERDICT[$be.$f]}" "${OUT[$be.$f]}"
}

table() {
    local be f
    echo
    echo "fault matrix (reconnect-delay=$DELAY, timeout=$TIMEOUT, bound ${BOUND}s):"
    printf '%-8s' backend
    for f in $FAULTS; do printf ' %-5s' "$f"; done
    echo
    for be in $BACKENDS; do
        printf '%-8s' "$be"
        for f in $FAULTS; do printf ' %-5s' "${VERDICT[$be.$f]:--}"; done
        echo
    done
    echo "a restart within delay  b down past delay  c SIGSTOP  d server errors  e SIGHUP reloads  f kill -9 daemon"
}

[ -n "${FAULTS_KEEP:-}" ] && cleanup_fn "rm -rf $FAULTS_KEEP; mkdir -p $FAULTS_KEEP; cp -r $TMP/cell.* $MNT.log $FAULTS_KEEP/ 2>/dev/null"
start_all=$(now)
for be in $BACKENDS; do
    RA[$be]=256K
    "${be}_up"
done
mount_all
seed=1
for be in $BACKENDS; do
    for f in $FAULTS; do
        run_cell "$be" "$f" $((seed++))
    done
done
table
echo "matrix time: $(secs "$start_all" "$(now)")s"
kill -0 "$(cat "$MNT.pid")" 2>/dev/null && nd_unmount "$MNT"
[ $FAILED = 0 ] || { echo "FAIL: some cells failed (see above)"; exit 1; }
echo "fault matrix passed"

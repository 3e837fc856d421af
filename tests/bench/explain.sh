#!/bin/bash
# explain.sh [--rounds N] [--parts abcde]: the measurements behind the
# targets that `make bench` misses (tests/bench/README.md, "What bounds
# netdiskfs"). Run as root, on a machine doing nothing else.
#
# (a) placement: sequential 4 KiB O_DIRECT reads (fio, psync, 3 s) of an
#     entry whose data is already in netdiskfs's cache (a file:// image on
#     tmpfs, read once), so only the FUSE round trip is left: with the
#     scheduler free, with the daemon and fio on the same CPU, and on
#     different CPUs (taskset). Shows what a wake-up on another CPU costs.
# (b) CPU per GiB: reading the same 1 GiB over HTTP from nginx on loopback
#     with `curl -o /dev/null` and with `dd` from a netdiskfs mount: wall
#     time and the CPU seconds of every process involved (from
#     /proc/PID/stat), to show where a 2-core machine's time goes.
# (c) the same for iSCSI: `dd` from a netdiskfs mount of a tgtd LUN, with
#     tgtd's CPU seconds.
# (d) wake-ups per request: cold random 4 KiB O_DIRECT reads (fio libaio,
#     4 jobs x QD16 and 1 job x QD1, 3 s) over NBD (nbdkit on tmpfs, Unix
#     socket) through netdiskfs, nbdfuse and qemu-storage-daemon. For each:
#     the daemon's context switches (voluntary: it slept and had to be
#     woken; involuntary: preempted), summed over its threads from
#     /proc/PID/task/*/status before and after, and the whole machine's
#     (/proc/stat ctxt), each divided by fio's request count; for
#     netdiskfs also per thread name (nd-fuse: FUSE request loop, nd-nbd:
#     an NBD connection's dispatcher, nd-work: background workers). And
#     the CPU budget: the machine's busy time and the daemon's CPU time
#     per request (/proc/stat, /proc/PID/stat), and the IOPS the machine
#     would cap at if the daemon's own CPU time were zero.
# (e) the cost of cache-dir= on a cold read: 1 GiB over HTTP (nginx on
#     loopback) read with dd from a netdiskfs mount without and with an
#     empty cache-dir on the local disk: MB/s, the machine's CPU seconds
#     and how busy it was; then the machine's CPU seconds to write 1 GiB
#     to the local disk (dd), the least a second tier adds, and the
#     fraction of the no-cache-dir rate that is left once it is added;
#     the local disk's O_DIRECT write rate (fio); and FUSE's own ceiling
#     for a sequential read here, from the daemon's memory cache.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/tgtd.sh"
. "$TOP/tests/lib/nbdkit.sh"
export LC_ALL=C
ROUNDS=2 PARTS=abcde
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --parts) PARTS=$2; shift ;;
    *) echo "usage: $0 [--rounds N] [--parts abcde]" >&2; exit 2 ;;
    esac
    shift
done
part() { [[ $PARTS == *$1* ]]; }
[ "$(id -u)" = 0 ] || fail "needs root (tmpfs, drop_caches, FUSE)"
requires fio
if part a; then requires taskset; fi
if part b; then requires nginx; requires curl; fi
NGINX_ROOT=$TMP/fs/www IMG=$TMP/fs/www/disk.img
[ -x "$ND" ] || fail "no netdiskfs binary at $ND (make netdiskfs)"

mkdir -p "$TMP/fs"
mount -t tmpfs -o size=1100M tmpfs "$TMP/fs" || fail "cannot mount a tmpfs"
cleanup_fn "umount -l '$TMP/fs'"
mkdir -p "$NGINX_ROOT"
head -c 1024M /dev/urandom >"$IMG"

# cpu_of PID...: user+system seconds (in ticks) summed over the PIDs.
cpu_of() {
    local p t=0 v
    for p in "$@"; do
        # A process may end between the listing and the read: counts 0.
        v=$(awk '{ print $14 + $15 }' /proc/$p/stat 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo $t
}
# sys_of PID: its system time (in ticks), for the kernel's share.
sys_of() { awk '{ print $15 }' /proc/$1/stat 2>/dev/null || echo 0; }
ticks() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }
# mbs NS: MB/s for 1 GiB in NS nanoseconds.
mbs() { awk -v ns="$1" 'BEGIN { printf "%.0f", 1073741824 * 1000 / ns }'; }

if part a; then
echo "== (a) 4 KiB O_DIRECT reads from netdiskfs's cache, by CPU placement"
nd_mount "file://$IMG" "$TMP/m" -o cache-size=512M
dd if="$TMP/m/disk.img" of=/dev/null bs=1M count=256 iflag=direct status=none
DP=$(cat "$TMP/m.pid")
fio4k() {
    "$@" fio --name=p --filename="$TMP/m/disk.img" --rw=read --bs=4k --direct=1 \
        --ioengine=psync --size=256m --runtime=3 --time_based --output-format=terse 2>/dev/null |
        awk -F';' '{ printf "%.1f", $7 * 1.024 / 1000 }' # terse field 7: KiB/s
}
for ((r = 1; r <= ROUNDS; r++)); do
    free=$(fio4k)
    taskset -a -p -c 0 "$DP" >/dev/null
    same=$(fio4k taskset -c 0)
    other=$(fio4k taskset -c 1)
    taskset -a -p -c 0-$(($(nproc) - 1)) "$DP" >/dev/null
    printf '   round %d: free %s MB/s   same CPU %s MB/s   different CPUs %s MB/s\n' \
        "$r" "$free" "$same" "$other"
done
nd_unmount "$TMP/m"
hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
[ -r $hp ] && echo "   (guest_halt_poll_ns = $(cat $hp): an idle vCPU halts at once, so waking it costs an exit to the host)"
fi

# sampled CMD...: run CMD in the background until it ends; sets SAMPLED to
# its CPU ticks as last seen (sampled every 20 ms while it ran).
sampled() {
    local pid v
    "$@" &
    pid=$! SAMPLED=0
    while kill -0 $pid 2>/dev/null; do
        v=$(cpu_of $pid)
        ((v > 0)) && SAMPLED=$v # not the 0 of a process just gone
        sleep 0.02
    done
    wait $pid
}

# nd_dd URL: read all of the entry URL with dd; sets ND_RESULT to "MB/s,
# CPU seconds of the daemon, of dd, of the server PIDs in SERVER_PIDS".
nd_dd() {
    local d0 d1 n0 n1 t0 t1
    nd_mount "$1" "$TMP/x"
    echo 3 >/proc/sys/vm/drop_caches
    DP=$(cat "$TMP/x.pid")
    d0=$(cpu_of "$DP") n0=$(cpu_of $SERVER_PIDS) t0=$(date +%s%N)
    sampled dd if="$TMP/x/$(ls "$TMP/x")" of=/dev/null bs=1M status=none
    t1=$(date +%s%N) d1=$(cpu_of "$DP") n1=$(cpu_of $SERVER_PIDS)
    nd_unmount "$TMP/x"
    ND_RESULT="$(mbs $((t1 - t0))) $(ticks $((d1 - d0))) $(ticks "$SAMPLED") $(ticks $((n1 - n0)))"
}

if part b; then
echo "== (b) CPU seconds to read 1 GiB over HTTP (nginx on loopback)"
nginx_start
URL=$NGINX_URL/disk.img
ngx_pids() { pgrep -P "$NGINX_PID" | tr '\n' ' '; echo "$NGINX_PID"; }
for ((r = 1; r <= ROUNDS; r++)); do
    n0=$(cpu_of $(ngx_pids)) t0=$(date +%s%N)
    sampled curl -s -o /dev/null "$URL"
    t1=$(date +%s%N) n1=$(cpu_of $(ngx_pids))
    printf '   round %d: curl -o /dev/null  %5s MB/s   CPU s: curl >=%s nginx %s\n' "$r" \
        "$(mbs $((t1 - t0)))" "$(ticks "$SAMPLED")" "$(ticks $((n1 - n0)))"

    SERVER_PIDS=$(ngx_pids)
    nd_dd "$URL"
    read -r rate dcpu ddcpu scpu <<<"$ND_RESULT"
    printf '   round %d: netdiskfs + dd     %5s MB/s   CPU s: netdiskfs %s dd >=%s nginx %s\n' \
        "$r" "$rate" "$dcpu" "$ddcpu" "$scpu"
done
fi

if part c; then
echo "== (c) CPU seconds to read 1 GiB over iSCSI (tgtd on loopback)"
if command -v tgtd >/dev/null; then
    port=$(tgt_free_port)
    tgtd_start "$port"
    tgt_target "$port" 1 iqn.2026-01.org.netdiskfs:explain
    tgt_lun "$port" 1 1 "$IMG" readonly
    SERVER_PIDS=$(cat "$TMP/tgtd.$port.pid" 2>/dev/null || pgrep -x tgtd | head -n 1)
    for ((r = 1; r <= ROUNDS; r++)); do
        nd_dd "iscsi://127.0.0.1:$port/iqn.2026-01.org.netdiskfs:explain/1"
        read -r rate dcpu ddcpu scpu <<<"$ND_RESULT"
        printf '   round %d: netdiskfs + dd     %5s MB/s   CPU s: netdiskfs %s dd >=%s tgtd %s\n' \
            "$r" "$rate" "$dcpu" "$ddcpu" "$scpu"
    done
    tgtd_stop "$port"
else
    echo "   tgtd not installed"
fi
fi

# csw_snap PID: one line per thread: "tid name voluntary involuntary".
csw_snap() {
    local t
    for t in /proc/$1/task/*; do
        awk -v tid="${t##*/}" '/^Name:/ { n = $2 }
            /^voluntary_ctxt_switches/ { v = $2 }
            /^nonvoluntary_ctxt_switches/ { i = $2 }
            END { if (n != "") print tid, n, v, i }' "$t/status" 2>/dev/null
    done
}
sys_ctxt() { awk '/^ctxt/ { print $2 }' /proc/stat; }
# sys_busy: the machine's busy ticks (all CPUs; not idle, not iowait, not
# stolen by the hypervisor).
sys_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
sys_steal() { awk '/^cpu / { print $9; exit }' /proc/stat; }

# wake_fio NAME PID FILE FIO-ARGS...: one cold fio run against FILE with
# the daemon PID; prints the switches per request.
wake_fio() {
    local name=$1 pid=$2 file=$3 s0 s1 reqs iops b0 b1 d0 d1 k0 k1 t0 t1 secs=3; shift 3
    echo 3 >/proc/sys/vm/drop_caches
    csw_snap "$pid" >"$TMP/csw0"
    s0=$(sys_ctxt) b0=$(sys_busy) d0=$(cpu_of "$pid") k0=$(sys_of "$pid") t0=$(sys_steal)
    fio --name=w --filename="$file" --rw=randread --bs=4k --direct=1 \
        --ioengine=libaio --randrepeat=0 --runtime=$secs --time_based \
        --output-format=terse --terse-version=3 "$@" >"$TMP/wfio" 2>/dev/null
    s1=$(sys_ctxt) b1=$(sys_busy) d1=$(cpu_of "$pid") k1=$(sys_of "$pid") t1=$(sys_steal)
    csw_snap "$pid" >"$TMP/csw1"
    # terse field 6: KiB read, 8: IOPS
    reqs=$(awk -F';' 'NF > 50 { print int($6 / 4) }' "$TMP/wfio")
    iops=$(awk -F';' 'NF > 50 { print $8 }' "$TMP/wfio")
    [ "${reqs:-0}" -gt 0 ] || { echo "   $name: fio failed"; return; }
    awk -v name="$name" -v reqs="$reqs" -v iops="$iops" -v sys=$((s1 - s0)) '
        FNR == NR { v0[$1] = $3; i0[$1] = $4; next }
        { dv = $3 - v0[$1]; di = $4 - i0[$1]; V += dv; I += di
          tv[$2] += dv; ti[$2] += di }
        END {
            printf "   %-20s %6d IOPS  per request: daemon %.2f voluntary + %.2f involuntary, machine %.2f\n",
                name, iops, V / reqs, I / reqs, sys / reqs
            for (n in tv)
                if ((tv[n] + ti[n]) / reqs >= 0.01)
                    printf "   %-20s          thread %-16s %.2f + %.2f\n", "", n, tv[n] / reqs, ti[n] / reqs
        }' "$TMP/csw0" "$TMP/csw1"
    # The CPU budget: on a saturated machine, IOPS cannot pass
    # CPUs / (busy time per request - the daemon's), even with a daemon
    # that costs nothing.
    awk -v reqs="$reqs" -v busy=$((b1 - b0)) -v d=$((d1 - d0)) -v k=$((k1 - k0)) -v st=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
        -v ncpu="$(nproc)" -v secs=$secs 'BEGIN {
            bu = busy / hz * 1e6 / reqs; du = d / hz * 1e6 / reqs; ku = k / hz * 1e6 / reqs
            printf "   %-20s          CPU per request: machine %.1f us (%.0f%% of %d CPUs busy, %.0f%% stolen), daemon %.1f us (%.1f in the kernel);", "", bu, 100 * busy / hz / secs / ncpu, ncpu, 100 * st / hz / secs / ncpu, du, ku
            if (bu > du) printf " a daemon costing 0 would cap at %.0f IOPS", ncpu * 1e6 / (bu - du)
            print ""
        }'
}

# wake_all FIO-ARGS...: netdiskfs, nbdfuse, qemu-storage-daemon in turn.
wake_all() {
    local pid
    nd_mount "nbd+unix:///?socket=$WS" "$TMP/w"
    wake_fio netdiskfs "$(cat "$TMP/w.pid")" "$TMP/w/$(ls "$TMP/w")" "$@"
    nd_unmount "$TMP/w"
    if command -v nbdfuse >/dev/null; then
        mkdir -p "$TMP/nf"
        nbdfuse -r "$TMP/nf/disk" "nbd+unix:///?socket=$WS" >"$TMP/nf.log" 2>&1 &
        pid=$!
        wait_for 20 mountpoint -q "$TMP/nf" || fail "nbdfuse did not mount"
        wake_fio nbdfuse $pid "$TMP/nf/disk" "$@"
        fusermount3 -u "$TMP/nf"
        wait $pid
    fi
    if command -v qemu-storage-daemon >/dev/null; then
        touch "$TMP/qsd.img"
        qemu-storage-daemon --blockdev "driver=nbd,server.type=unix,server.path=$WS,node-name=n0,read-only=on" \
            --export "type=fuse,id=e0,node-name=n0,mountpoint=$TMP/qsd.img,writable=off" >"$TMP/qsd.log" 2>&1 &
        pid=$!
        wait_for 20 mountpoint -q "$TMP/qsd.img" || fail "qemu-storage-daemon did not mount"
        wake_fio qemu-storage-daemon $pid "$TMP/qsd.img" "$@"
        kill -TERM $pid
        wait $pid
    fi
}

if part d; then
    echo "== (d) context switches per request, cold random 4 KiB O_DIRECT over NBD (Unix socket)"
    [ -s "$IMG" ] || head -c 1024M /dev/urandom >"$IMG"
    nbdkit_unix wk -r file "$IMG"
    WS=$(nbdkit_sock wk)
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "  round $r: 4 jobs x QD16"
        wake_all --iodepth=16 --numjobs=4 --group_reporting
        echo "  round $r: 1 job x QD1"
        wake_all --iodepth=1 --numjobs=1
    done
    nbdkit_stop wk
fi
# cold_dd OPTS...: mount the HTTP image with OPTS, read it all with dd
# (timed); prints "MB/s machine-CPU-s busy-% daemon-CPU-s". Unlike
# nd_dd, dd's CPU is not sampled: the sampling's own processes would
# count in the machine's busy time, which is what this measures.
cold_dd() {
    local b0 b1 d0 d1 t0 t1
    nd_mount "$URL" "$TMP/x" "$@"
    echo 3 >/proc/sys/vm/drop_caches
    DP=$(cat "$TMP/x.pid")
    b0=$(sys_busy) d0=$(cpu_of "$DP") t0=$(date +%s%N)
    dd if="$TMP/x/$(ls "$TMP/x")" of=/dev/null bs=1M status=none
    t1=$(date +%s%N) b1=$(sys_busy) d1=$(cpu_of "$DP")
    nd_unmount "$TMP/x"
    echo "$(mbs $((t1 - t0))) $(awk -v ns=$((t1 - t0)) -v b=$((b1 - b0)) -v d=$((d1 - d0)) \
        -v hz="$(getconf CLK_TCK)" -v ncpu="$(nproc)" 'BEGIN { printf "%.2f %.0f %.2f",
            b / hz, 100 * b / hz / (ns / 1e9) / ncpu, d / hz }')"
}

if part e; then
echo "== (e) what cache-dir= costs a cold read: 1 GiB over HTTP, without and with it"
requires nginx
[ -n "${NGINX_PID:-}" ] || nginx_start
URL=$NGINX_URL/disk.img LOCAL=$TMP/local # the local disk, as the bench's
mkdir -p "$LOCAL"
for ((r = 1; r <= ROUNDS; r++)); do
    read -r off_mbs off_cpu off_busy off_d <<<"$(cold_dd)"
    printf '   round %d: no cache-dir   %5s MB/s   machine %s CPU-s (%s%% busy), daemon %s\n' \
        "$r" "$off_mbs" "$off_cpu" "$off_busy" "$off_d"
    rm -rf "$LOCAL/cd"
    read -r on_mbs on_cpu on_busy on_d <<<"$(cold_dd -o "cache-dir=$LOCAL/cd,cache-dir-size=2G")"
    printf '   round %d: cache-dir      %5s MB/s   machine %s CPU-s (%s%% busy), daemon %s  (%.2fx)\n' \
        "$r" "$on_mbs" "$on_cpu" "$on_busy" "$on_d" "$(awk -v a="$on_mbs" -v b="$off_mbs" 'BEGIN { print a / b }')"
    # The least a second tier adds: the same GiB written to the local
    # disk in blocks and flushed (no checksums, no map), by dd.
    b0=$(sys_busy)
    dd if=/dev/zero of="$LOCAL/w" bs=64k count=16384 conv=fdatasync status=none
    b1=$(sys_busy)
    rm -f "$LOCAL/w"
    awk -v r="$r" -v w=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v ncpu="$(nproc)" \
        -v mbs="$off_mbs" -v cpu="$off_cpu" 'BEGIN {
        w /= hz; t = 1073.741824 / mbs
        printf "   round %d: writing 1 GiB to the local disk (dd, 64 KiB, fdatasync): machine %.2f CPU-s;\n", r, w
        printf "            with it added, the no-cache-dir read on %d CPUs takes >= %.2f s: at most %.2fx of its rate\n",
            ncpu, (cpu + w) / ncpu, t * ncpu / (cpu + w) < 1 ? t * ncpu / (cpu + w) : 1 }'
done
rm -rf "$LOCAL/cd"
# The local disk's own write rate, without the page cache (fio, 1 MiB
# O_DIRECT writes of 1 GiB, one and sixteen in flight): what a tier can
# keep up with once the page cache no longer absorbs its writes.
for qd in 1 16; do
    fio --name=w --filename="$LOCAL/w" --rw=write --bs=1M --iodepth=$qd --ioengine=libaio \
        --direct=1 --size=1g --output-format=terse --terse-version=3 2>/dev/null |
        awk -F';' -v qd=$qd '{ printf "   the local disk: 1 MiB O_DIRECT writes, %2d in flight (fio): %.0f MB/s\n", qd, $48 * 1.024 / 1000 }'
    rm -f "$LOCAL/w"
done
# FUSE's own ceiling for a sequential read here: the same GiB from the
# daemon's memory cache (a file:// entry read once, the kernel's page
# cache dropped before each timed read).
nd_mount "file://$IMG" "$TMP/x" -o cache-size=1200M
dd if="$TMP/x/disk.img" of=/dev/null bs=1M status=none
for ((r = 1; r <= ROUNDS; r++)); do
    echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s%N)
    dd if="$TMP/x/disk.img" of=/dev/null bs=1M status=none
    t1=$(date +%s%N)
    printf '   round %d: FUSE from the memory cache (dd, 1 MiB)  %5s MB/s\n' "$r" "$(mbs $((t1 - t0)))"
done
nd_unmount "$TMP/x"
fi
echo "(MB/s = 10^6 bytes/s; '>=': sampled every 20 ms while the process ran)"

#!/bin/bash
# explain.sh [--rounds N]: the two measurements behind the targets that
# `make bench` misses (tests/bench/README.md, "What bounds netdiskfs").
# Run as root, on a machine doing nothing else.
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
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/tgtd.sh"
export LC_ALL=C
ROUNDS=2
[ "${1:-}" = --rounds ] && ROUNDS=$2
[ "$(id -u)" = 0 ] || fail "needs root (tmpfs, drop_caches, FUSE)"
for t in fio taskset nginx curl; do requires $t; done
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
ticks() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }
# mbs NS: MB/s for 1 GiB in NS nanoseconds.
mbs() { awk -v ns="$1" 'BEGIN { printf "%.0f", 1073741824 * 1000 / ns }'; }

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
echo "(MB/s = 10^6 bytes/s; '>=': sampled every 20 ms while the process ran)"

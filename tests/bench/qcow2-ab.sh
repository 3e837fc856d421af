#!/bin/bash
# qcow2-ab.sh OLD NEW [PAIRS]: two netdiskfs binaries side by side on the
# qcow2 scenarios (11) without the peers, alternating OLD, NEW per pair, so
# that a change is measured against the binary before it on the same
# (shared, noisy) machine. A 1 GiB random image as qcow2 (64 KiB clusters)
# and a 256 MiB one with 512-byte clusters on nbdkit over a Unix socket:
# seq read (dd bs=1M), random 4 KiB (fio, 4 jobs x QD16, 3 s), seq write
# (dd bs=1M conv=fsync, 256 MiB, allocated clusters, then qemu-img check).
# Prints one line per run: MB/s or IOPS and the daemon's CPU seconds.
# MODES="seq rand" picks some. As root (drop_caches); run it under `flock /tmp/nd-heavy.lock`.
set -u
OLD=$1 NEW=$2 PAIRS=${3:-3}
T=$(mktemp -d /dev/shm/nd-qcow2-ab.XXXXXX)
trap 'fusermount -u "$T/mnt" 2>/dev/null; [ -s "$T/nbdkit.pid" ] && kill "$(cat "$T/nbdkit.pid")"; rm -rf "$T"' EXIT
mkdir -p "$T/mnt"
head -c 1G /dev/urandom >"$T/raw"
qemu-img convert -f raw -O qcow2 "$T/raw" "$T/q.qcow2"
truncate -s 256M "$T/raw"
qemu-img convert -f raw -O qcow2 -o cluster_size=512 "$T/raw" "$T/c512.qcow2"
rm -f "$T/raw"

# one BIN MODE: mount IMG through nbdkit, run the workload, unmount.
one() {
    local bin=$1 mode=$2 img=$T/q.qcow2 ro=-r c0 c1 t0 t1 v dp i
    case $mode in
    c512) img=$T/c512.qcow2 ;;
    write) cp "$T/q.qcow2" "$T/w.qcow2"; img=$T/w.qcow2 ro= ;;
    esac
    rm -f "$T/sock" "$T/nbdkit.pid"
    nbdkit $ro -U "$T/sock" -P "$T/nbdkit.pid" file "$img"
    for i in $(seq 50); do [ -S "$T/sock" ] && break; sleep 0.1; done
    echo "d nbd+unix:///?socket=$T/sock format=qcow2" >"$T/tab"
    "$bin" "$T/tab" "$T/mnt" -f >"$T/log" 2>&1 &
    dp=$!
    for i in $(seq 100); do [ -e "$T/mnt/d" ] && break; sleep 0.1; done
    sync; echo 3 >/proc/sys/vm/drop_caches
    c0=$(awk '{print $14+$15}' "/proc/$dp/stat") t0=$(date +%s.%N)
    case $mode in
    seq|c512) timeout 60 dd if="$T/mnt/d" of=/dev/null bs=1M 2>/dev/null ;;
    write) timeout 60 dd if=/dev/zero of="$T/mnt/d" bs=1M count=256 conv=fsync,notrunc 2>/dev/null ;;
    rand) timeout 40 fio --name=r --filename="$T/mnt/d" --rw=randread --bs=4k --direct=1 \
        --ioengine=libaio --iodepth=16 --numjobs=4 --runtime=3 --time_based \
        --group_reporting --output-format=terse >"$T/fio" 2>&1 ;;
    esac
    t1=$(date +%s.%N) c1=$(awk '{print $14+$15}' "/proc/$dp/stat")
    case $mode in
    rand) v="$(awk -F';' '{print $8}' "$T/fio") IOPS" ;;
    write) v="$(echo "268435456/($t1-$t0)/1000000" | bc) MB/s" ;;
    *) v="$(echo "$(stat -c %s "$T/mnt/d")/($t1-$t0)/1000000" | bc) MB/s" ;;
    esac
    fusermount -u "$T/mnt"; wait "$dp"
    kill "$(cat "$T/nbdkit.pid")"; sleep 0.2
    if [ "$mode" = write ]; then
        qemu-img check -q "$T/w.qcow2" || v="$v, qemu-img check FAILED"
        rm -f "$T/w.qcow2"
    fi
    printf '%-6s %-12s %s cpu=%ss\n' "$mode" "$(basename "$bin")" "$v" \
        "$(echo "($c1-$c0)/100" | bc -l | cut -c1-4)"
}

for mode in ${MODES:-seq rand write c512}; do
    for p in $(seq "$PAIRS"); do
        one "$OLD" "$mode"
        one "$NEW" "$mode"
    done
done

#!/bin/bash
# Run the qcow2 layer's fuzzer briefly (FUZZ_SECONDS, default 20) from
# seeds made with qemu-img: v2, v3, compressed, extended L2 (empty, with
# allocated and zero subclusters, compressed), a snapshot and a backing
# file name, each with 512-byte clusters where the format allows
# (small inputs mutate better).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${FUZZ_QCOW2_BIN:-$top/build/fuzz-qcow2}
[ -x "$bin" ] || { echo "fuzz target not built: $bin" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
work=$(mktemp -d /tmp/netdiskfs-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
(
    cd "$work" || exit 1
    seq 1 3000 | head -c 8k > t.raw
    q() { qemu-img "$@" >/dev/null 2>&1 || { echo "qemu-img $* failed"; exit 1; }; }
    q create -f qcow2 -o compat=0.10,cluster_size=512 corpus/v2 16k
    q create -f qcow2 -o cluster_size=512 corpus/v3 16k
    q convert -c -O qcow2 -o cluster_size=512 -f raw t.raw corpus/deflate
    q convert -c -O qcow2 -o cluster_size=512,compression_type=zstd -f raw t.raw corpus/zstd
    q create -f qcow2 -o cluster_size=16k,extended_l2=on corpus/extl2 64k
    # Extended L2 entries in use: allocated and zero subclusters, over a
    # backing file name, and compressed clusters.
    q create -f qcow2 -o cluster_size=16k,extended_l2=on -u -b t.raw -F raw corpus/extl2w 64k
    qemu-io -f qcow2 -c 'write -P 3 1k 2k' -c 'write -z 8k 1k' -c 'write -P 4 20k 3k' \
        corpus/extl2w >/dev/null 2>&1
    q convert -c -O qcow2 -o cluster_size=16k,extended_l2=on -f raw t.raw corpus/extl2c
    q create -f qcow2 -o cluster_size=512 -u -b other.qcow2 -F qcow2 corpus/backing 16k
    q create -f qcow2 -o cluster_size=512 s.qcow2 16k
    qemu-io -f qcow2 -c 'write -P 1 0 2k' -c 'write -z 4k 1k' s.qcow2 >/dev/null 2>&1
    q snapshot -c s1 s.qcow2
    cp s.qcow2 corpus/snapshot
    cp corpus/v3 corpus/written
    qemu-io -f qcow2 -c 'write -P 2 512 3k' corpus/written >/dev/null 2>&1
) || exit 1
"$bin" -max_total_time="${FUZZ_SECONDS:-20}" -max_len=262144 -timeout=10 \
    -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$(dirname "$bin")/fuzz-qcow2-" \
    "$work/corpus" >"$work.log" 2>&1
rc=$?
grep -E 'stat::number_of_executed_units|Done' "$work.log" | head -3
if [ $rc -ne 0 ]; then tail -n 60 "$work.log"; fi
rm -f "$work.log"
exit $rc

#!/bin/bash
# Run the parser fuzzer briefly (FUZZ_SECONDS, default 20) from the corpus.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${FUZZ_BIN:-$top/build/fuzz-parse}
[ -x "$bin" ] || { echo "fuzz target not built: $bin" >&2; exit 1; }
work=$(mktemp -d /tmp/netdiskfs-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$top"/tests/fuzz/corpus/* "$work"/
"$bin" -max_total_time="${FUZZ_SECONDS:-20}" -max_len=4096 -timeout=5 \
    -print_final_stats=1 -artifact_prefix="$(dirname "$bin")/fuzz-" "$work" >"$work.log" 2>&1
rc=$?
grep -E 'stat::number_of_executed_units|Done' "$work.log" | head -3
if [ $rc -ne 0 ]; then tail -n 60 "$work.log"; fi
rm -f "$work.log"
exit $rc

#!/bin/bash
# The benchmark harness still runs end to end: `tests/bench/bench.sh
# --quick` (64 MiB image, one round, two NBD scenarios) prints its table and
# writes the CSV (and the PNG when gnuplot is installed). No assertion on
# speed: only that every tool was run or reported with a reason.
. "$(dirname "$0")/../lib/functions.sh"
requires nbdkit
requires fio

OUT=$TMP/out
"$TOP/tests/bench/bench.sh" --quick --out "$OUT" >"$TMP/bench.log" 2>&1 ||
    { show_log "$TMP/bench.log"; fail "bench.sh --quick failed"; }
cat "$TMP/bench.log"

grep -q '^scenario .*median' "$TMP/bench.log" || fail "no table printed"
[ -s "$OUT/bench.csv" ] || fail "no bench.csv"
[ -s "$OUT/bench.md" ] || fail "no bench.md"
head -n 1 "$OUT/bench.csv" | grep -q '^scenario,description,tool,unit,median' ||
    fail "bench.csv has no header"
for s in 1-nbd-unix 3-nbd-odirect; do
    grep -q "^\"$s\",.*\"netdiskfs\",MB/s,[0-9]" "$OUT/bench.csv" ||
        { show_log "$OUT/bench.csv"; fail "no netdiskfs figure for $s"; }
    grep -q "^\"$s\",.*\"nbdfuse\",MB/s," "$OUT/bench.csv" ||
        { show_log "$OUT/bench.csv"; fail "nbdfuse is missing from $s"; }
done
# Every row has a figure or a reason.
awk 'NR > 1 && !/,(MB\/s|IOPS|-),[0-9]/ && /""$/ { print; bad = 1 } END { exit bad }' "$OUT/bench.csv" ||
    fail "a row has neither a figure nor a reason"
grep -q 'peak RSS\|RSS' "$OUT/bench.md" || fail "no peak RSS in bench.md"
if command -v gnuplot >/dev/null; then
    [ -s "$OUT/bench.png" ] || fail "gnuplot is installed but no bench.png"
    [ "$(head -c 4 "$OUT/bench.png" | tail -c 3)" = PNG ] || fail "bench.png is not a PNG"
else
    grep -q 'chart: not drawn: gnuplot is not installed' "$TMP/bench.log" ||
        fail "missing gnuplot was not reported"
fi
echo "ok: bench --quick produced the table, CSV, markdown and chart"

#!/bin/bash
# --print-config of every example entry of README, the man pages and the
# example table stays byte-identical to tests/data/examples.print-config
# (recorded before the URL grammar moved into the backends' URL files).
. "$(dirname "$0")/../lib/functions.sh"
install -m 600 "$TOP/tests/data/examples.tab" "$TMP/examples.tab"
(cd "$TMP" && "$ND" --print-config examples.tab) > "$TMP/out" 2>&1 ||
    { cat "$TMP/out"; fail "--print-config failed on the examples"; }
sed "s|^$TMP/||" "$TMP/out" | diff -u "$TOP/tests/data/examples.print-config" - ||
    fail "--print-config output changed (diff above)"
echo "$(grep -c '^\[' "$TMP/out") examples unchanged"

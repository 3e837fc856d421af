#!/bin/bash
# run-tests.sh TEST...: run each test (a unit binary or a func script),
# print one line each, then "N passed, N failed, N skipped". Exit non-zero
# on any failure. Output of failing tests is shown.
pass=0 failed=0 skipped=0 failures=()
logdir=$(mktemp -d /tmp/netdiskfs-results.XXXXXX)
for t in "$@"; do
    name=${t#./}
    log=$logdir/$(echo "$name" | tr / _).log
    start=$(date +%s)
    timeout -k 10 ${TEST_TIMEOUT:-300} "$t" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    case $rc in
    0) pass=$((pass + 1)); echo "PASS: $name (${secs}s)" ;;
    77) skipped=$((skipped + 1)); echo "SKIP: $name ($(tail -n1 "$log"))" ;;
    *) failed=$((failed + 1)); failures+=("$name")
       echo "FAIL: $name (exit $rc, ${secs}s)"; sed 's/^/    /' "$log" | tail -n 60 ;;
    esac
done
rm -rf "$logdir"
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
if [ $skipped -gt 0 ]; then
    echo "$pass passed, $failed failed, $skipped skipped"
else
    echo "$pass passed, $failed failed"
fi
[ $failed -eq 0 ]

#!/bin/bash
# man-pages: every man page renders without a single groff warning
# (groff -man -ww -z), and every backend compiled in has its page.
. "$(dirname "$0")/../lib/functions.sh"
requires groff

shopt -s nullglob
pages=("$TOP"/man/*.1 "$TOP"/man/*.5)
[ ${#pages[@]} -gt 0 ] || fail "no man pages in $TOP/man"
for p in netdiskfs.1 netdisk.tab.5; do
    [ -f "$TOP/man/$p" ] || fail "man/$p is missing"
done

bad=0
for p in "${pages[@]}"; do
    out=$(groff -man -ww -z "$p" 2>&1)
    if [ -n "$out" ]; then
        echo "FAIL: ${p#$TOP/}:" >&2
        echo "$out" | sed 's/^/    /' >&2
        bad=1
    else
        echo "ok: ${p#$TOP/}"
    fi
done
[ $bad = 0 ] || fail "groff warnings above"

# Each backend (but the local file one) documented in netdiskfs-NAME(1).
backends=$("$ND" --help | sed -n 's/^  \([a-z0-9]*\): .*/\1/p')
[ -n "$backends" ] || fail "netdiskfs --help lists no backend"
for b in $backends; do
    [ "$b" = file ] && continue
    [ -f "$TOP/man/netdiskfs-$b.1" ] || { echo "FAIL: backend $b has no man/netdiskfs-$b.1" >&2; bad=1; }
done
[ $bad = 0 ] || fail "backend pages missing"
echo "all ${#pages[@]} pages render cleanly"

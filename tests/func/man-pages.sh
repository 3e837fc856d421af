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

# Each backend's page documents every key of its option list (as --help
# prints it) in its OPTIONS section, and documents no key the backend or
# the core does not take.
core="driver ro readahead block-size cache-size cache connections timeout
reconnect-delay open-timeout offset size debug"
"$ND" --help > "$TMP/help"
for b in $backends; do
    [ "$b" = file ] && continue
    page="$TOP/man/netdiskfs-$b.1"
    awk -v b="$b" '/^  [a-z0-9]*: / { on = ($1 == b ":") }
        on && /^    [a-zN.-]*=/ { sub(/=.*/, "", $1); print $1 }' \
        "$TMP/help" | sort -u > "$TMP/keys.$b"
    [ -s "$TMP/keys.$b" ] || { echo "FAIL: --help lists no option of $b" >&2; bad=1; }
    # The keys of the page: the tag of each top-level .TP of OPTIONS
    # (".B key", ".BI server. N .type", ".BI url= url",
    # ".BR password \", \" password\-file"), values nested in .RS left out.
    awk '/^\.SH/ { on = ($2 == "OPTIONS") } /^\.RS/ { rs++ } /^\.RE/ { rs-- }
        on && !rs && prev == ".TP" { print } { prev = $0 }' "$page" |
        sed 's/^\.[BIR]* //; s/", "/,/g; s/[" ]//g; s/\\-/-/g' | tr , '\n' |
        sed 's/=.*//' | sort -u > "$TMP/page.$b"
    missing=$(comm -23 "$TMP/keys.$b" "$TMP/page.$b")
    [ -z "$missing" ] ||
        { echo "FAIL: man/netdiskfs-$b.1 does not document:" $missing >&2; bad=1; }
    for k in $(comm -13 "$TMP/keys.$b" "$TMP/page.$b"); do
        case " $(echo $core) " in *" $k "*) continue ;; esac
        echo "FAIL: man/netdiskfs-$b.1 documents $k, which $b does not take" >&2
        bad=1
    done
done
[ $bad = 0 ] || fail "man pages and option lists differ"
echo "every backend's options match its page"

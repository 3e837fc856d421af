#!/bin/bash
# code-shape: the shape issue #15 asks for, checked on every build.
#  - No function in src/ or backends/ is longer than 120 lines. Functions
#    are laid out as clang-format does here: "{" alone at column 0 opens a
#    body, "}" alone at column 0 closes it (initialisers end with "};").
#  - src/url.c holds no protocol knowledge: no protocol name (iscsi,
#    gluster, nbd, sftp, curl, rbd, nfs) as a word in its code, comments
#    and #include lines aside (libcurl's URL API, curl_url_*, is the
#    RFC 3986 splitter, not the curl protocol, and is not a whole word).
#  - Each check is shown to fail on a planted offender first.
. "$(dirname "$0")/../lib/functions.sh"
MAX=120

# long_functions FILE...: "file:line: N lines: signature" per offender.
long_functions() {
    awk -v max=$MAX '
        /^\{$/ { start = FNR; name = prev }
        /^\}$/ && start {
            n = FNR - start + 1
            if (n > max) print FILENAME ":" start ": " n " lines: " name
            start = 0
        }
        { prev = $0 }' "$@"
}

# protocol_words FILE: lines of FILE's code naming a protocol.
protocol_words() {
    perl -0777 -ne '
        s{/\*.*?\*/}{ "\n" x ($& =~ tr/\n//) }gse; # keep line numbers
        s{//[^\n]*}{}g;
        my $n = 0;
        for (split /\n/, $_, -1) {
            $n++;
            next if /^\s*#\s*include/;
            print "$ARGV:$n: $_\n"
                if /\b(iscsi|gluster|nbd|sftp|curl|rbd|nfs)\b/i;
        }' "$1"
}

# The checks catch what they should.
{
    echo 'static int f(void)'; echo '{'
    for i in $(seq $MAX); do echo "	x($i);"; done
    echo '}'
    echo 'static const int t[] = {'; echo '};'
} > "$TMP/long.c"
long_functions "$TMP/long.c" | grep -q 'long.c:2: 122 lines' ||
    fail "the length check misses a 122-line function"
printf '/* nbd */\n#include <curl/curl.h>\nint x = curl_url_get();\n' > "$TMP/clean.c"
[ -z "$(protocol_words "$TMP/clean.c")" ] ||
    fail "the protocol check flags a comment, an include or curl_url_*"
printf 'int a;\nif (!strcmp(d, "nbd"))\n' > "$TMP/dirty.c"
protocol_words "$TMP/dirty.c" | grep -q 'dirty.c:2:' ||
    fail "the protocol check misses a protocol name in code"

cd "$TOP" || exit 1
long=$(long_functions src/*.c src/*/*.c backends/*.c)
[ -z "$long" ] || { echo "$long" >&2; fail "functions longer than $MAX lines"; }
proto=$(protocol_words src/url.c)
[ -z "$proto" ] || { echo "$proto" >&2; fail "src/url.c names a protocol in its code"; }
echo "ok: no function over $MAX lines in $(ls src/*.c src/*/*.c backends/*.c | wc -l) files; src/url.c names no protocol"

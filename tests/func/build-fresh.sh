#!/bin/bash
# A fresh machine: pkg-config knows none of the libraries until the deps
# step has run. The build must still succeed on the first try (the
# Makefile may not read pkg-config before its install step).
. "$(dirname "$0")/../lib/functions.sh"
requires pkg-config
mkdir -p "$TMP/bin"
real_pc=$(command -v pkg-config) real_dq=$(command -v dpkg-query)
# pkg-config fails until the install step has looked at the packages.
cat > "$TMP/bin/pkg-config" <<EOT
#!/bin/sh
[ -e "$TMP/installed" ] || { echo "pkg-config: no packages yet" >&2; exit 1; }
exec "$real_pc" "\$@"
EOT
# The install step's package query marks the packages as installed.
cat > "$TMP/bin/dpkg-query" <<EOT
#!/bin/sh
touch "$TMP/installed"
exec "$real_dq" "\$@"
EOT
chmod +x "$TMP/bin/pkg-config" "$TMP/bin/dpkg-query"
PATH=$TMP/bin:$PATH make -C "$TOP" -j2 BUILD="$TMP/build" "$TMP/build/netdiskfs" \
    >"$TMP/make.log" 2>&1 || { tail -n 30 "$TMP/make.log"; fail "first build on a fresh machine failed"; }
[ -e "$TMP/installed" ] || fail "the deps step did not run"
"$TMP/build/netdiskfs" --help >/dev/null || fail "the built daemon does not run"
echo "fresh build ok"

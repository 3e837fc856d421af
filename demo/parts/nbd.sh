# demo/parts/nbd.sh: an image served by nbdkit on a Unix socket and on a
# loopback TCP port, mounted through three URL forms. Sourced by
# demo/demo.sh.

_demo_nbd_dir() { echo "$DEMO_WORK/nbd"; }

# _demo_nbd_serve NAME ARGS...: nbdkit in the background with a pidfile,
# waiting (bounded) until it listens.
_demo_nbd_serve() {
    local name=$1 dir n
    shift
    dir=$(_demo_nbd_dir)
    rm -f "$dir/$name.pid"
    nbdkit -P "$dir/$name.pid" "$@" >>"$dir/$name.log" 2>&1 || {
        echo "nbd: nbdkit ($name) failed to start:" >&2
        cat "$dir/$name.log" >&2
        return 1
    }
    for n in $(seq 1 50); do
        [ -s "$dir/$name.pid" ] && return 0
        sleep 0.1
    done
    echo "nbd: nbdkit ($name) wrote no pidfile in 5 s" >&2
    return 1
}

demo_nbd_start() {
    local dir port p
    dir=$(_demo_nbd_dir)
    command -v nbdkit >/dev/null || { echo "nbd: nbdkit is not installed" >&2; return 1; }
    mkdir -p "$dir"
    head -c $((16 * 1048576)) /dev/urandom > "$dir/disk.img" || return 1
    cp "$dir/disk.img" "$dir/disk.img.orig"
    rm -f "$dir/nbd.sock"
    _demo_nbd_serve unix -U "$dir/nbd.sock" file "$dir/disk.img" || return 1
    port=
    for p in $(seq 20809 20899); do
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { port=$p; break; }
    done
    [ -n "$port" ] || { echo "nbd: no free TCP port" >&2; return 1; }
    _demo_nbd_serve tcp -i 127.0.0.1 -p "$port" file "$dir/disk.img" || return 1
    cat >> "$DEMO_TABLE" <<EOT
nbd-unix    nbd+unix:///?socket=$dir/nbd.sock
nbd-legacy  nbd:unix:$dir/nbd.sock
nbd-tcp     nbd://127.0.0.1:$port/  connections=2
EOT
}

demo_nbd_check() {
    local dir name ok=0
    dir=$(_demo_nbd_dir)
    for name in nbd-unix nbd-legacy nbd-tcp; do
        if cmp -s "$DEMO_MNT/$name" "$dir/disk.img.orig"; then
            ok=$((ok + 1))
        else
            echo "nbd: $name differs from the image nbdkit serves" >&2
        fi
    done
    echo "nbd: $ok/3 entries (nbd+unix://, nbd:unix:, nbd:// over TCP) read back the 16 MiB image byte for byte"
    [ $ok -eq 3 ]
}

demo_nbd_stop() {
    local dir name pid n
    dir=$(_demo_nbd_dir)
    demo_stop_pidfile "$dir/unix.pid" "$dir/tcp.pid"
    rm -f "$dir/nbd.sock"
}

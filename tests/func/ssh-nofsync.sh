#!/bin/bash
# ssh-nofsync.sh: an SFTP server that does not offer fsync@openssh.com (the
# real sftp-server behind a relay that drops the extension from its
# VERSION reply): one warning for the entry however many connections
# open, writes still reach the server byte-exact, fsync() does not fail
# and sends nothing the server does not know.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "SKIP: python3 not installed" >&2; exit 77; }
SFTP_SERVER=/usr/lib/openssh/sftp-server
[ -x $SFTP_SERVER ] || { echo "SKIP: $SFTP_SERVER not installed" >&2; exit 77; }

sshd_setup
SFTP_LOG=$SSHD_DIR/sftp.log
: > "$SFTP_LOG"
cat > "$SSHD_DIR/nofsync.py" <<'EOF'
# Relay stdin/stdout to sftp-server; drop fsync@openssh.com from VERSION.
import os, struct, subprocess, sys, threading
srv = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        srv.stdin.write(b)
    srv.stdin.close()
threading.Thread(target=up, daemon=True).start()
def readn(n):
    b = b""
    while len(b) < n:
        c = srv.stdout.read(n - len(b))
        if not c:
            sys.exit(0)
        b += c
    return b
n = struct.unpack(">I", readn(4))[0]
p = readn(n)
if p[0] == 2:  # SSH_FXP_VERSION: type, version, then (name, data) strings
    out, i = p[:5], 5
    while i < len(p):
        l = struct.unpack(">I", p[i:i + 4])[0]; name = p[i + 4:i + 4 + l]; i += 4 + l
        l = struct.unpack(">I", p[i:i + 4])[0]; data = p[i + 4:i + 4 + l]; i += 4 + l
        if name != b"fsync@openssh.com":
            out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(data)) + data
    p = out
os.write(1, struct.pack(">I", len(p)) + p)
while True:
    b = srv.stdout.read(65536)
    if not b:
        break
    os.write(1, b)
EOF
printf '#!/bin/sh\nexec %s %s %s -e -l VERBOSE 2>>%s\n' "$PY" "$SSHD_DIR/nofsync.py" "$SFTP_SERVER" "$SFTP_LOG" > "$SSHD_DIR/sftp-nofsync"
chmod 755 "$SSHD_DIR/sftp-nofsync"
sshd_start "Subsystem sftp $SSHD_DIR/sftp-nofsync"
agent_start
IMG=$TMP/disk.img
pattern "$IMG" 8
cp "$IMG" "$TMP/ref"
echo "d ssh://127.0.0.1:$SSHD_PORT$IMG known-hosts=$SSHD_KNOWN_HOSTS,connections=4" > "$TMP/t.tab"
nd_mount "$TMP/t.tab" "$TMP/m"
"$PY" - "$TMP/m/d" "$TMP/ref" <<'EOF' || fail "writes through the mount"
import os, sys
fm, fr = os.open(sys.argv[1], os.O_RDWR), os.open(sys.argv[2], os.O_RDWR)
size = os.fstat(fr).st_size
# Parallel-ish load so that several connections open.
for i in range(64):
    off, data = (i * 131071) % (size - 70000), os.urandom(70000)
    os.pwrite(fm, data, off)
    os.pwrite(fr, data, off)
os.fsync(fm)
os.close(fm)
EOF
cmp "$IMG" "$TMP/ref" || fail "the server's file differs from what was written"
cmp "$TMP/m/d" "$TMP/ref" || fail "the mount differs from what was written"
n=$(grep -c "does not offer fsync@openssh.com" "$TMP/m.log")
[ "$n" = 1 ] || { show_log "$TMP/m.log"; fail "expected one warning, got $n"; }
grep -q "^open " "$SFTP_LOG" || { show_log "$SFTP_LOG"; fail "the relay did not serve the mount"; }
grep -q "^fsync " "$SFTP_LOG" && fail "fsync was sent to a server that does not offer it"
nd_unmount "$TMP/m"
echo "ok: no fsync@openssh.com: one warning, writes byte-exact, no fsync sent"

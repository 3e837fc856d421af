#!/usr/bin/env python3
"""pmap.py ADDR PORT PIDFILE PROG=PORT...: a minimal portmapper (RPC program
100000 over TCP) that answers PMAP v2 GETPORT and rpcbind v3/v4 GETADDR
from a fixed table, for clients that cannot be given the NFS and MOUNT
ports (QEMU's nfs driver) while the real rpcbind of the test server stays
in its own network namespace. Everything else gets PROC_UNAVAIL."""
import os
import socket
import socketserver
import struct
import sys

TABLE = {}


def xdr_string(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)


def read_string(buf, off):
    n = struct.unpack_from(">I", buf, off)[0]
    return buf[off + 4:off + 4 + n].decode(), off + 4 + n + (-n % 4)


def answer(call):
    xid, mtype, _rpcvers, prog, vers, proc = struct.unpack_from(">6I", call, 0)
    off = 24
    for _ in range(2):  # credential, verifier: flavor, opaque body
        n = struct.unpack_from(">I", call, off + 4)[0]
        off += 8 + n + (-n % 4)
    head = struct.pack(">5I", xid, 1, 0, 0, 0)  # reply, accepted, null verf
    if mtype != 0 or prog != 100000:
        return head + struct.pack(">I", 1)  # PROG_UNAVAIL
    if proc == 0:
        return head + struct.pack(">I", 0)
    if proc == 3 and vers == 2:  # GETPORT(prog, vers, prot, port)
        p = struct.unpack_from(">I", call, off)[0]
        return head + struct.pack(">II", 0, TABLE.get(p, 0))
    if proc == 3 and vers in (3, 4):  # GETADDR(prog, vers, netid, addr, owner)
        p = struct.unpack_from(">I", call, off)[0]
        port = TABLE.get(p, 0)
        addr = "127.0.0.1.%d.%d" % (port >> 8, port & 255) if port else ""
        return head + struct.pack(">I", 0) + xdr_string(addr)
    return head + struct.pack(">I", 3)  # PROC_UNAVAIL


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            msg = b""
            while True:  # record marking: fragments until the last one
                hdr = self.recv(sock, 4)
                if hdr is None:
                    return
                n = struct.unpack(">I", hdr)[0]
                frag = self.recv(sock, n & 0x7FFFFFFF)
                if frag is None:
                    return
                msg += frag
                if n & 0x80000000:
                    break
            rep = answer(msg)
            sock.sendall(struct.pack(">I", 0x80000000 | len(rep)) + rep)

    @staticmethod
    def recv(sock, n):
        b = b""
        while len(b) < n:
            c = sock.recv(n - len(b))
            if not c:
                return None
            b += c
        return b


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    addr, port, pidfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for kv in sys.argv[4:]:
        k, v = kv.split("=")
        TABLE[int(k)] = int(v)
    srv = Server((addr, port), Handler)
    srv.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with open(pidfile, "w") as f:
        f.write("%d\n" % os.getpid())
    srv.serve_forever()


if __name__ == "__main__":
    main()

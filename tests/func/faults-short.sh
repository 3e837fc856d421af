#!/bin/bash
# faults-short: a subset of the fault matrix (tests/faults/faults.sh) for
# make check, under a minute: NBD with its server restarted within
# reconnect-delay, left down past it, answering errors, SIGHUP reloads and
# kill -9 of the daemon; HTTP answering 503. `make faults` runs it all.
here=$(dirname "$0")
"$here/../faults/faults.sh" -b nbd -f "a b d e f" || exit $?
exec "$here/../faults/faults.sh" -b http -f d

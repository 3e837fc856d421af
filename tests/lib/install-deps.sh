#!/bin/sh
# Install every Debian package netdiskfs needs to build, test, demo and
# benchmark (the benchmark's smoke run is part of make check).
# Idempotent: only runs apt-get when something is missing.
set -e
PKGS="build-essential pkg-config clang libfuse3-dev fuse3 libjansson-dev
libcurl4-openssl-dev zlib1g-dev libzstd-dev libxxhash-dev libnbd-dev libiscsi-dev libssh-dev libglusterfs-dev
nbdkit libnbd-bin python3-libnbd gnutls-bin tgt libiscsi-bin
openssh-server openssh-client glusterfs-server glusterfs-client
nginx-light openssl vsftpd fio xxd groff-base man-db psmisc iproute2
libclang-rt-14-dev genisoimage curl procps
qemu-system-common qemu-block-extra qemu-utils httpdirfs sshfs gnuplot-nox
ceph-mon ceph-osd ceph-common librbd-dev librados-dev rbd-fuse kmod
nfs-ganesha nfs-ganesha-vfs libnfs-dev libnfs-utils rpcbind util-linux"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "netdiskfs: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi
# Keep apt from starting daemons on every address when it installs them.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing

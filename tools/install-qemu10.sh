#!/bin/sh
# Put QEMU 10.x (x86_64 and s390x) from Debian bookworm-backports beside the system QEMU.
#
# The system's apt sources and its QEMU are left as they are: a private apt
# configuration (sources, lists and archives under the cache folder) downloads the
# packages, and `dpkg -x` unpacks them into DEST.  Idempotent: when DEST already holds
# a working QEMU 10.x nothing is downloaded.  Prints where the binaries are.
#
# usage: tools/install-qemu10.sh [DEST]   (default /var/cache/guestcpu-test/qemu-10)
set -eu

DEST=${1:-/var/cache/guestcpu-test/qemu-10}
WORK=$(dirname "$DEST")/apt-backports
SUITE=bookworm-backports
# What QEMU 10 needs beyond Debian 12's own libraries (found by running it): its
# common and data files; s390x has its own package since QEMU 9.
PACKAGES="qemu-system-x86 qemu-system-s390x qemu-system-common qemu-system-data"

works() {
    "$DEST/usr/bin/qemu-system-x86_64" --version 2>/dev/null | grep -q 'version 10\.' &&
        "$DEST/usr/bin/qemu-system-s390x" --version 2>/dev/null | grep -q 'version 10\.'
}

if works; then
    echo "QEMU 10 is in $DEST/usr/bin ($("$DEST/usr/bin/qemu-system-x86_64" --version | head -1))"
    exit 0
fi

mkdir -p "$WORK/lists/partial" "$WORK/archives/partial" "$WORK/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" \
    > "$WORK/sources.list"
APT_OPTS="-o Dir::Etc::SourceList=$WORK/sources.list -o Dir::Etc::SourceParts=- \
 -o Dir::State::Lists=$WORK/lists -o Dir::Cache=$WORK -o Debug::NoLocking=1 \
 -o APT::Sandbox::User=root -qq"
echo "downloading $PACKAGES from $SUITE into $WORK/debs"
# shellcheck disable=SC2086
apt-get $APT_OPTS update
rm -f "$WORK"/debs/*.deb
specs=""
for p in $PACKAGES; do specs="$specs $p/$SUITE"; done
# shellcheck disable=SC2086
(cd "$WORK/debs" && apt-get $APT_OPTS download $specs)

# Unpack into a fresh folder first, so an interrupted run never leaves a half tree in DEST.
tmp="$DEST.partial"
rm -rf "$tmp"
mkdir -p "$tmp"
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$tmp"; done
rm -rf "$DEST"
mv "$tmp" "$DEST"
if ! works; then
    echo "QEMU 10 unpacked into $DEST does not run:" >&2
    "$DEST/usr/bin/qemu-system-x86_64" --version >&2 || true
    exit 1
fi
echo "QEMU 10 is in $DEST/usr/bin ($("$DEST/usr/bin/qemu-system-x86_64" --version | head -1))"

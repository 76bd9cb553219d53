#!/bin/sh
# Build a Debian bookworm base image with Python 3.11 into buildah's local storage, for machines
# that cannot pull docker.io/library/python:3.11-slim-bookworm (the Containerfile's default BASE):
#
#   deploy/base-image.sh [IMAGE] [ROOTFS]      # as root; needs debootstrap and buildah
#   buildah bud --build-arg BASE=localhost/hallmark-base:bookworm -t hallmark -f Containerfile .
#
# The host's CA bundle goes into the base, so a build behind a TLS-inspecting proxy can reach PyPI.
# Extra buildah options (e.g. --root/--runroot/--storage-driver=vfs) come from BUILDAH_OPTS.
set -eu
IMAGE=${1:-localhost/hallmark-base:bookworm}
ROOTFS=${2:-$(mktemp -d)/rootfs}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    rm -rf "$ROOTFS.partial"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
        bookworm "$ROOTFS.partial" "$MIRROR" >/dev/null
    # debootstrap may leave the chroot's /proc mounted
    for m in proc sys dev/pts; do
        if mountpoint -q "$ROOTFS.partial/$m"; then umount -l "$ROOTFS.partial/$m"; fi
    done
    chroot "$ROOTFS.partial" apt-get clean
    rm -rf "$ROOTFS.partial"/var/lib/apt/lists/* "$ROOTFS.partial"/var/cache/apt/*.bin
    mv "$ROOTFS.partial" "$ROOTFS"
fi
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
# shellcheck disable=SC2086
ctr=$(buildah ${BUILDAH_OPTS:-} from scratch)
# shellcheck disable=SC2086
mnt=$(buildah ${BUILDAH_OPTS:-} mount "$ctr")
cp -a --one-file-system "$ROOTFS/." "$mnt/"
# shellcheck disable=SC2086
buildah ${BUILDAH_OPTS:-} umount "$ctr" >/dev/null
# shellcheck disable=SC2086
buildah ${BUILDAH_OPTS:-} config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/sh "$ctr"
# shellcheck disable=SC2086
buildah ${BUILDAH_OPTS:-} commit --rm "$ctr" "$IMAGE" >/dev/null
echo "$IMAGE"

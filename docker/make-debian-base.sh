#!/bin/sh
# Make a base image for docker/Dockerfile.cpu from Debian's packages alone, where Docker Hub cannot be
# reached: debootstrap a minimal Debian bookworm (python3 is 3.11) with python3-venv, then `docker import`.
#   sudo docker/make-debian-base.sh [TAG]        # default TAG: distillscape-base:bookworm
# Needs root, debootstrap (apt-get install debootstrap), a running Docker engine and a Debian mirror
# (DEBIAN_MIRROR, default http://deb.debian.org/debian). The root filesystem is built in a temporary
# folder under /var/tmp (TMPDIR overrides it) and removed afterwards.
set -eu

TAG=${1:-distillscape-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" -eq 0 ] || { echo "make-debian-base.sh: debootstrap needs root (run it with sudo)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "make-debian-base.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/distillscape-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
ROOTFS=$WORK/rootfs

# minbase: essential packages and apt only; python3-venv brings python3 and ensurepip (pip for the venv)
debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$ROOTFS" "$MIRROR"

# what a container never needs: downloaded packages, package lists, documentation, translations
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/log/*.log

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=python3,python3-venv $SUITE $MIRROR" \
    - "$TAG"
docker run --rm --network none "$TAG" python3 -c "import sys, venv, ensurepip; print('base ok: Python', sys.version.split()[0])"

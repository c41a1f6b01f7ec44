#!/usr/bin/env bash
# debian:bookworm-slim for the Dockerfile, made offline when no registry has it: a minbase
# debootstrap tree from the Debian mirror (a package registry, reachable), imported as the tag.
set -euo pipefail
TAG=debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image: $TAG present"
    exit 0
fi
if docker pull -q "$TAG" >/dev/null 2>&1; then
    echo "base image: $TAG pulled"
    exit 0
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
tree=$(mktemp -d /var/tmp/xmasq-bookworm.XXXXXX)
trap 'rm -rf "$tree"' EXIT
echo "base image: debootstrap bookworm (minbase) from $MIRROR"
debootstrap --variant=minbase bookworm "$tree" "$MIRROR" >"$tree.log" 2>&1 || { tail -20 "$tree.log"; exit 1; }
rm -f "$tree.log"
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
tar -C "$tree" -c . | docker import -c 'CMD ["bash"]' - "$TAG" >/dev/null
echo "base image: $TAG imported"

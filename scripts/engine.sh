#!/usr/bin/env bash
# A second Docker engine for the tests, beside the system's (never replacing it): a minimal root of
# another Debian release, made with debootstrap, holding that release's docker.io (dockerd,
# containerd, runc, docker-proxy, docker-init) and iptables. lab/engine.py runs its dockerd pivot_rooted into it
# for the testbed's hosts. Idempotent: a root that is complete (its stamp names what it holds) is kept.
#   scripts/engine.sh SUITE ROOT     SUITE: trixie (Docker Engine 26.1) or bookworm (20.10); ROOT: where
#                                    (lab/engine.py owns the place: XMASQ_ENGINES_DIR/SUITE)
# Mirror: DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
suite=${1:?usage: scripts/engine.sh SUITE ROOT}
root=${2:?usage: scripts/engine.sh SUITE ROOT}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="docker.io iptables procps"  # procps: dockerd runs ps for `docker top`
stamp="$suite: $PACKAGES"

say() { echo "engine: $*"; }
[ "$(id -u)" = 0 ] || { echo "engine: needs root" >&2; exit 1; }
[ "$(cat "$root/.xmasq-engine" 2>/dev/null)" = "$stamp" ] && exit 0
command -v debootstrap >/dev/null || { echo "engine: debootstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }

# Built aside and moved into place, so an interrupted run never leaves a root that looks complete.
work=$root.partial
log=$root.log
rm -rf "$work" && mkdir -p "$(dirname "$root")"
say "building a $suite root in $root (debootstrap, then $PACKAGES)"
debootstrap --variant=minbase "$suite" "$work" "$MIRROR" >"$log" 2>&1 ||
    { tail -20 "$log" >&2; exit 1; }
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d" && chmod +x "$work/usr/sbin/policy-rc.d"
chroot "$work" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends $PACKAGES" >>"$log" 2>&1 ||
    { tail -20 "$log" >&2; exit 1; }
chroot "$work" apt-get clean
echo "$stamp" >"$work/.xmasq-engine"
rm -rf "$root" && mv "$work" "$root"
say "$suite root ready: $(chroot "$root" dockerd --version)"

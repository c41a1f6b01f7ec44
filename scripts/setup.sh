#!/usr/bin/env bash
# Idempotent host setup for XMasq: Debian packages, kernel headers for bcc, the
# project venv, a local etcd (unless XMASQ_ETCD_ENDPOINTS names one) and dockerd.
# Run as root. Every step checks first and only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=/run/xmasq
LOG_DIR=/var/log/xmasq
DATA_DIR=/var/lib/xmasq
# What the driver needs (`make run`), then what only the tests, the testbed's image and the benchmark
# use (`make dev`: servers, load generators, tcpdump, perf, debootstrap for the engine roots).
# wireguard-tools (wg) and wireguard-go: encrypted networks (the userspace tunnel where the kernel has none)
PACKAGES="docker.io etcd-server etcd-client python3-bpfcc python3-venv clang llvm iproute2 iptables ipset
          linux-headers-amd64 curl wireguard-tools wireguard-go"
DEV_PACKAGES="busybox-static gcc libc6-dev openssl systemd debootstrap tcpdump bpftool linux-perf iperf3 sockperf
              nginx-light wrk redis-server redis-tools memcached libmemcached-tools"
[ "${1:-}" = --dev ] && PACKAGES="$PACKAGES $DEV_PACKAGES"
# What differs between the supported releases (Debian 12 bookworm, 13 trixie).
. /etc/os-release
case "${VERSION_CODENAME:-}" in
    bookworm) ;;
    trixie) PACKAGES="$PACKAGES docker-cli" ;; # split out of docker.io, which only recommends it
    *) echo "setup: ${PRETTY_NAME:-this system} is not a supported release (Debian 12 or 13); trying Debian 12's packages" >&2 ;;
esac
SERVICES="nginx-light:nginx redis-server:redis-server memcached:memcached"  # package:unit the benchmark runs itself

say() { echo "setup: $*"; }
[ "$(id -u)" = 0 ] || { echo "setup: needs root (make run as root, or sudo make run)" >&2; exit 1; }
mkdir -p "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "setup: $what did not come up within ${limit}s" >&2; return 1
}

# 1. Debian packages
missing=()
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    # Packages do not start their services (nginx would listen on the host's port 80): this
    # script starts what the project needs itself.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
    if [ -d /run/systemd/system ]; then  # nor at the next boot, where this script installed them
        for pair in $SERVICES; do
            [[ " ${missing[*]} " == *" ${pair%%:*} "* ]] && systemctl disable --quiet "${pair#*:}" || true
        done
    fi
fi

# 2. Kernel headers for bcc, only where the running kernel has none. Debian's
#    headers work for programs that use only UAPI headers (ours do).
kdir=/lib/modules/$(uname -r)
if [ ! -e "$kdir/build" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
    [ -n "$hdr" ] || { echo "setup: no linux-headers-*-amd64 under /usr/src" >&2; exit 1; }
    mkdir -p "$kdir"
    ln -sfn "$hdr" "$kdir/build"
    ln -sfn "${hdr%-amd64}-common" "$kdir/source"
    say "kernel $(uname -r) has no headers: linked $kdir/build -> $hdr"
fi

# 3. The venv: Debian's python3 (bcc's Python module is Debian's), project installed editable.
# What the driver needs (requirements.txt); with --dev (the tests, the benchmark, the testbed's
# swarm: `make dev`, which their make targets run) also requirements-dev.txt.
mode=runtime reqs=requirements.txt check="flask, pyroute2, etcd3gw, waitress"
[ "${1:-}" = --dev ] && mode=dev reqs=requirements-dev.txt check="$check, docker, pytest"
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
have=$(cat .venv/.installed 2>/dev/null || true)
if [ ! -x .venv/bin/python ] || { [ "$have" != "$want $mode" ] && [ "$have" != "$want dev" ]; }; then
    say "creating .venv and installing $reqs"
    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q --disable-pip-version-check -r "$reqs" -e . 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -c "import $check"
    echo "$want $mode" > .venv/.installed
fi

# 4. etcd: a local single-member etcd on 127.0.0.1 unless one is configured.
if [ -z "${XMASQ_ETCD_ENDPOINTS:-}" ] && ! curl -sf -m 2 http://127.0.0.1:2379/health >/dev/null; then
    say "starting local etcd on 127.0.0.1:2379 (data $DATA_DIR/etcd, log $LOG_DIR/etcd.log)"
    setsid nohup etcd --name xmasq-local --data-dir "$DATA_DIR/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster xmasq-local=http://127.0.0.1:2380 \
        --auto-compaction-mode periodic --auto-compaction-retention 5m \
        >>"$LOG_DIR/etcd.log" 2>&1 </dev/null &
    echo $! > "$RUN_DIR/etcd.pid"
    wait_for 30 etcd curl -sf -m 1 http://127.0.0.1:2379/health
fi

# 5. dockerd, if none answers.
if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        say "starting docker.service"
        systemctl start docker
    else
        say "starting dockerd (log $LOG_DIR/dockerd.log)"
        setsid nohup dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
        echo $! > "$RUN_DIR/dockerd.pid"
    fi
    wait_for 60 dockerd docker info
fi

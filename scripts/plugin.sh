#!/usr/bin/env bash
# `make plugin`: the driver's image (Dockerfile) -> its rootfs + plugin/config.json -> a managed plugin.
#   scripts/plugin.sh          build, then create xmasq/xmasq:latest in the dockerd of $DOCKER_HOST
#   scripts/plugin.sh build    only build it (into build/plugin: rootfs/ and config.json)
#   scripts/plugin.sh create   create it from the last build only (another dockerd, e.g. a testbed host)
# The image is always built by the default dockerd; the base image is made offline if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${PLUGIN_NAME:-xmasq/xmasq:latest}
IMAGE=xmasq/xmasq-rootfs:latest
DIR=build/plugin

build() {
    DOCKER_HOST= scripts/base-image.sh
    echo "plugin: downloading the Python wheels; building $IMAGE"
    rm -rf build/wheels
    .venv/bin/pip download -q -r requirements.txt -d build/wheels
    # --force-rm: a failed step leaves no container behind; the prune removes earlier builds that
    # this one untagged (the Dockerfile's label marks them), ~600 MB each, and nobody else's images
    DOCKER_HOST= docker build -q --force-rm -t "$IMAGE" . >/dev/null
    DOCKER_HOST= docker image prune -f --filter label=org.xmasq.image=driver >/dev/null
    rm -rf "$DIR"
    mkdir -p "$DIR/rootfs"
    cid=$(DOCKER_HOST= docker create "$IMAGE")
    DOCKER_HOST= docker export "$cid" | tar -x -C "$DIR/rootfs"
    DOCKER_HOST= docker rm "$cid" >/dev/null
    cp plugin/config.json "$DIR/"
}

create() {
    [ -f "$DIR/config.json" ] || { echo "plugin: no build in $DIR; run make plugin" >&2; exit 1; }
    mkdir -p /var/lib/xmasq-plugin /etc/xmasq  # the plugin's default mount sources
    if docker plugin inspect "$NAME" >/dev/null 2>&1; then
        docker plugin rm -f "$NAME" >/dev/null
    fi
    docker plugin create "$NAME" "$DIR" >/dev/null
    echo "plugin: $NAME created (disabled); set XMASQ_ETCD_ENDPOINTS and XMASQ_HOST_ID, then enable it"
}

case "${1:-all}" in
    build) build ;;
    create) create ;;
    all) build; create ;;
    *) echo "usage: scripts/plugin.sh [build|create]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# `make stop`: stop the driver, and etcd / dockerd if `make run` started them.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=/run/xmasq
[ -x .venv/bin/xmasq ] && .venv/bin/xmasq daemon stop
for svc in dockerd etcd; do
    pidfile=$RUN_DIR/$svc.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        echo "stopping $svc (pid $pid)"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done

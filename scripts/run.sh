#!/usr/bin/env bash
# `make run`: set up the host, start the driver in the background, say what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# RESTART=1 (used by `make test`) replaces a running driver, so the code under test is this tree's.
[ "${RESTART:-0}" = 1 ] && .venv/bin/xmasq daemon stop
.venv/bin/xmasq daemon start
cat <<MSG

XMasq is running.
  driver : $(.venv/bin/xmasq config | .venv/bin/python -c 'import json,sys; c=json.load(sys.stdin); print(c["socket"], "| etcd", c["etcd_endpoints"])')
  logs   : /var/log/xmasq/xmasq.log (driver), /var/log/xmasq/etcd.log, /var/log/xmasq/dockerd.log
  stop   : make stop

Try:
  docker network create -d xmasq --subnet 10.42.0.0/24 demo
  docker run --rm --network demo busybox ping -c 3 10.42.0.1
MSG

# XMasq for Docker. `make run` starts everything; `make test` runs the suite (as root, or with sudo).
VENV   := .venv
PYTEST := $(VENV)/bin/pytest --durations=20  # the slowest tests named, to keep the suite inside its 30 minutes

.PHONY: run stop setup dev test test-engines test-release lint unit e2e partition dense soak demo bench bench-services scale converge profile programs install units plugin

run:            ## set up the host and start the driver in the background
	@scripts/run.sh

stop:           ## stop what `make run` started
	@scripts/stop.sh

setup:          ## packages, kernel header links, venv (what the driver needs), etcd, dockerd (idempotent)
	@scripts/setup.sh

dev:            ## setup, plus requirements-dev.txt in the venv (tests, benchmark, testbed's swarm)
	@scripts/setup.sh --dev

lint: dev       ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy xmasq_driver lab

unit: dev       ## unit tests only (fake backends, no root needed once set up)
	$(PYTEST) tests/unit

e2e: dev        ## end-to-end tests against a driver restarted from this tree
	@RESTART=1 scripts/run.sh
	$(PYTEST) tests/e2e

test: dev       ## the whole suite (driver restarted from this tree), a smoke set on the other Debian release's engine, the README on that release; CI runs exactly this
	@RESTART=1 scripts/run.sh
	@$(MAKE) --no-print-directory lint
	$(PYTEST) tests
	$(VENV)/bin/python -m tests.engines --smoke
	$(VENV)/bin/python -m tests.release

test-engines: dev ## the end-to-end suite on this machine's Docker engine, then on the other release's (ENGINE=trixie|bookworm)
	@RESTART=1 scripts/run.sh
	$(PYTEST) tests/e2e
	$(VENV)/bin/python -m tests.engines $(if $(ENGINE),--engine $(ENGINE))

test-release: dev ## the README's commands on the other Debian release, in a container of it (RELEASE=trixie|bookworm)
	$(VENV)/bin/python -m tests.release $(if $(RELEASE),--release $(RELEASE))

partition: dev  ## a testbed host cut off from etcd for PARTITION seconds (default 600; the suite: 20), its flows checked every second
	@RESTART=1 scripts/run.sh
	XMASQ_TEST_PARTITION=$(or $(PARTITION),600) $(PYTEST) tests/e2e/test_faults.py -k partitioned_from_etcd

dense: dev      ## a dense testbed host: CONTAINERS on one network (default 1000; the suite: 60), NETWORKS networks (default 250; the suite: 15)
	@RESTART=1 scripts/run.sh
	XMASQ_TEST_DENSE=$(or $(CONTAINERS),1000) XMASQ_TEST_DENSE_NETWORKS=$(or $(NETWORKS),250) $(PYTEST) tests/e2e/test_dense.py

soak: dev       ## churn under traffic on 3 testbed hosts for DURATION seconds (default 7200; the suite: 90), a driver restart and an etcd leader change in the middle
	@RESTART=1 scripts/run.sh
	XMASQ_TEST_SOAK=$(or $(DURATION),7200) $(PYTEST) tests/e2e/test_soak.py

demo: dev run   ## two testbed hosts, one xmasq network across them, a ping (removes it all after)
	$(VENV)/bin/python -m lab demo

bench: dev run  ## benchmark vs host, Docker overlay and bridge, unpinned and pinned, then the service VIPs (QUICK=1: 2 x 1 s, no services; PIN=CPU; MODES=)
	$(VENV)/bin/python -m bench.run $(if $(QUICK),--quick) $(if $(PIN),--pin $(PIN)) $(if $(MODES),--modes $(MODES))
	$(if $(QUICK),,$(VENV)/bin/python -m bench.services $(if $(PIN),--pin $(PIN)))

bench-services: dev run ## a swarm service through its xmasq VIP vs its task address and Docker's overlay; failover times
	$(VENV)/bin/python -m bench.services $(if $(PIN),--pin $(PIN))

scale: dev      ## control plane at scale: a real driver, simulated hosts in etcd (HOSTS=1000 ENDPOINTS=100000)
	$(VENV)/bin/python -m bench.scale $(if $(HOSTS),--hosts $(HOSTS)) $(if $(ENDPOINTS),--endpoints $(ENDPOINTS))

converge: dev   ## convergence on a 5-host testbed: docker run to reachable from all others, removal gone from all
	$(VENV)/bin/python -m bench.convergence

plugin:         ## build the image (Dockerfile) and create the managed plugin xmasq/xmasq:latest
	@scripts/plugin.sh

profile: dev run ## ns per packet of each eBPF program; CPU per round trip by kernel area vs the host network (perf)
	$(VENV)/bin/python -m bench.profile

programs: dev   ## ns per packet of each fast-path program on crafted packets (BPF_PROG_TEST_RUN; no testbed), against BASE (a git revision, or a directory of eBPF sources)
	$(VENV)/bin/python -m bench.programs $(if $(BASE),--base $(BASE))

UNIT_DIR ?= /etc/systemd/system
units:          ## render the systemd units into build/systemd (install copies them)
	@mkdir -p build/systemd
	sed -e 's|@VENV@|$(CURDIR)/$(VENV)|g' -e 's|@DOCS@|$(CURDIR)/README.md|g' systemd/xmasq.service.in \
	    > build/systemd/xmasq.service
	cp systemd/xmasq-etcd.service build/systemd/

install: setup units  ## install the systemd units (see systemd/README.md)
	install -m 0644 build/systemd/xmasq.service build/systemd/xmasq-etcd.service $(UNIT_DIR)/
	install -d -m 0700 /etc/xmasq
	[ -e /etc/xmasq/xmasq.env ] || install -m 0600 systemd/xmasq.env.example /etc/xmasq/xmasq.env
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now xmasq-etcd xmasq"

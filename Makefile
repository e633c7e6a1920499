# zooserve: `make serve` to run, `make test` to check.  Everything installs from this repo's files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 3000
export BENTOML_DO_NOT_TRACK := true

.PHONY: install export serve bento test lint docs tools container-tools lock loadtest bench image image-test chart-check clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "zooserve needs Python 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[export,gpu,dev]'
	touch $(STAMP)

install: $(STAMP)

# Export what will be served into the BentoML model store, only what is missing: with a serving
# manifest (ZOOSERVE_CONFIG) exactly what it declares; without one, every zoo model that has no
# export yet (a user's own export is never replaced).  Neither moves what `latest` points at.
# WEIGHTS=pretrained: each model's official pretrained weights (torchvision DEFAULT, a named
# Hugging Face BERT), downloaded into their usual caches; the default is deterministic random init.
export: install
	$(BIN)/zoo export $(if $(ZOOSERVE_CONFIG),--manifest "$(ZOOSERVE_CONFIG)",--all --if-missing $(if $(filter pretrained,$(WEIGHTS)),--pretrained))

# Serve the default zoo on $(PORT) (HTTP) and $${ZOOSERVE_GRPC_PORT:-8001} (gRPC), in the foreground;
# WORKERS=N runs N serving processes (ZOOSERVE_WORKERS), each with every model.  Loopback only
# unless ZOOSERVE_HOST says otherwise (ZOOSERVE_HOST=0.0.0.0: every interface); gRPC follows
# the HTTP host unless ZOOSERVE_GRPC_HOST is set (docs/auth.md, "Binding").
serve: export
	$(if $(WORKERS),ZOOSERVE_WORKERS=$(WORKERS)) exec $(BIN)/bentoml serve --host $${ZOOSERVE_HOST:-127.0.0.1} --port $(PORT)

# A bento of the models in ZOOSERVE_MODELS (default all) at their exported versions, offline:
# `bentoml export zooserve:latest zooserve.bento` then carries it anywhere (README, "Bento").
bento: export
	$(BIN)/bentoml build

# System tools the tests drive: promtool (Debian's prometheus).  Installed only when missing.
tools:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool is missing: install Debian's prometheus package" >&2; exit 1; fi; }

# TEST_WORKERS processes share the suite by test file (pytest-xdist): servers start and exports
# run side by side.  TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 2
test: install tools
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# ruff, and the import contracts of pyproject.toml (the layers: tests/test_layout.py runs them too).
lint: install
	$(BIN)/ruff check zoo exporters services loadtests tests
	$(BIN)/lint-imports

# The documentation site: the reference pages made from the code, then MkDocs into build/site
# (offline; --strict: a broken link or a missing page fails).
docs: install
	$(BIN)/python docs/_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/zooserve-lock && $(PYTHON) -m venv /tmp/zooserve-lock
	/tmp/zooserve-lock/bin/pip install --quiet -e '.[export,gpu,dev]'
	{ echo "# Every package of '.[export,gpu,dev]' pinned exactly; make installs with -c constraints.txt."; \
	  echo "# Regenerate: make lock"; /tmp/zooserve-lock/bin/pip freeze --exclude-editable | grep -v '^-e'; \
	  echo "setuptools==84.2.1"; echo "pip==23.2.1"; } > constraints.txt
	/tmp/zooserve-lock/bin/python -m services.bento.requirements

# A Locust scenario headless (CSV, HTML report, PNG plots in results/loadtest/); see README.
loadtest: export
	$(BIN)/python -m loadtests.loadtest $(LOADTEST_ARGS)

# The benchmark: in-process limits vs served, ratios, stage breakdown (QUICK=1: within 5 minutes).
bench: export
	$(BIN)/python -m loadtests.bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# Helm lint/template, kubernetes-validate (1.29, 1.33), CRD schemas, promtool rules and tests.
chart-check: install tools
	deploy/check-chart.sh

container-tools:
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >/dev/null; }

# The CPU serving image (no torch; the default zoo from the model store baked in).
image: export container-tools
	BIN=$(BIN) deploy/image/build.sh

# Run the image: /readyz, /classify, v2 gRPC, then SIGTERM under load (zero failed accepted requests).
image-test: image
	BIN=$(BIN) deploy/image/test.sh

clean:
	rm -rf $(VENV) build results *.egg-info

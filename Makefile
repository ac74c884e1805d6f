# edgeferry: `make demo` runs the operator on the local testbed; `make test` runs every test.
# Every target installs what it needs and skips work whose output is already there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
APT_PACKAGES := docker.io docker-registry prometheus lua5.4 debootstrap busybox-static openssl jq \
  qemu-user-static containerd runc containernetworking-plugins iptables iproute2 gcc libc6-dev

.PHONY: help deps venv tools prepare unit-tools testbed-up testbed-down testbed-status lint unit integration test demo clean

help:
	@echo "make demo            local hub + edge clusters, the operator and the samples, left running"
	@echo "make test            lint, type checks, unit and integration tests (starts what they need)"
	@echo "make testbed-up|testbed-down|testbed-status"

deps:
	@start=$$SECONDS; missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi; echo "deps: Debian packages ready in $$((SECONDS - start)) s"

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml
	@start=$$SECONDS; \
	[ -x $(PY) ] || python3 -m venv .venv; \
	.venv/bin/pip install -q --upgrade pip; \
	.venv/bin/pip install -q -e '.[tools,dev]'; \
	rm -f .venv/.installed-*; touch $@; \
	echo "venv: Python packages ready in $$((SECONDS - start)) s"

tools:
	@bash testbed/tools/build.sh

# Everything the testbed needs before it can start: the Go tools (CPU-bound compiles) and the
# locally made base images (debootstrap: mostly downloads and unpacking), side by side, so a
# cold machine waits for the longer of the two instead of their sum. Warm: a few seconds.
prepare: deps venv
	@start=$$SECONDS; \
	bash testbed/tools/build.sh & tools=$$!; \
	$(PY) -m edgeferry_testbed base-images || { kill $$tools 2>/dev/null; exit 1; }; \
	wait $$tools; \
	echo "prepare: Go tools and base images ready in $$((SECONDS - start)) s"

# The unit tests render the chart (helm) and the kustomize bases (kubectl kustomize) with the
# pinned builds, and run promtool and lua5.4 from `deps`. A missing one fails the tests (no
# skips), so `make unit` provides them; a warm cache costs a few stat calls.
unit-tools:
	@bash testbed/tools/build.sh kubernetes helm

testbed-up: deps venv prepare
	@$(PY) -m edgeferry_testbed up

testbed-down: venv
	@$(PY) -m edgeferry_testbed down

testbed-status: venv
	@$(PY) -m edgeferry_testbed status

lint: venv
	@start=$$SECONDS; \
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && \
	.venv/bin/mypy && .venv/bin/lint-imports || exit 1; \
	echo "lint: ruff, mypy, import contracts passed in $$((SECONDS - start)) s"

unit: deps venv unit-tools
	@.venv/bin/pytest tests/unit -q

integration: deps venv prepare
	@.venv/bin/pytest tests/integration -q -m integration

test: deps venv prepare lint
	@start=$$SECONDS; .venv/bin/pytest tests -q --durations=30; echo "test: pytest finished in $$((SECONDS - start)) s"

demo: testbed-up
	@$(PY) -m edgeferry_testbed.demo

clean: testbed-down
	rm -rf .testbed

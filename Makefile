# gpuprov: the two commands that matter are `make up` (main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
GPUPROV := $(VENV)/bin/gpuprov
# What the local sandbox host needs from the system (installed only when missing, only as root).
SYSTEM_PACKAGES := openssh-server openssh-client docker.io busybox-static iproute2 util-linux procps
# What the viewer's browser test needs: Debian's Chromium (driven by Playwright, no browser download)
# and mmdebstrap (the Debian root its nginx and Orthanc images are made from).
SYSTEM_PACKAGES += chromium mmdebstrap
# The CNCF distribution registry `gpuprov build` pushes to in tests and `make bench-ready` (#16).
SYSTEM_PACKAGES += docker-registry

.PHONY: setup system venv up down test lint pulumi-yaml bench-deploy bench-idle bench-ready faults viewer-dist

setup: system venv

system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping system packages ($(SYSTEM_PACKAGES)); the local sandbox needs them"; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $@

up: setup
	$(GPUPROV) up $(ARGS)

down: venv
	$(GPUPROV) down $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

pulumi-yaml: venv
	$(PY) -c 'from gpuprov.infra.config import render_pulumi_yaml; open("Pulumi.yaml", "w").write(render_pulumi_yaml())'

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Deploy to a sandbox host behind a simulated 100 ms round trip: gpuprov vs Ansible, side by side (BENCH_RTT_MS=...).
bench-deploy: setup
	$(PY) bench/deploy/run.py

# Where the minutes of an `up` go (#16): built on the host vs pulled from a real registry on this machine,
# a realistic mmdebstrap image, and a projected cloud table. BENCH_LAYERS / BENCH_LAYER_MB size the image.
bench-ready: setup
	$(PY) bench/ready/run.py

# Replay five usage traces through the idle agent's real decide() at accelerated time.
bench-idle: venv
	$(PY) bench/idle/run.py

# Fault-injection suite: >= 200 `gpuprov ci` cycles against the Lambda stand-in and the
# local sandbox host, faults at random points; last line `cycles: N, leaks: N, secrets exposed: N`.
# FAULT_SEED=<n> replays a run's choices; FAULT_CYCLES / FAULT_WORKERS size it.
faults: setup
	$(PY) -m faults.run $(FAULT_ARGS)

# OHIF-AI's viewer built from its npm sources (the recipe's steps, tests/viewer/build_ohif_dist.sh) into
# .cache/ohif-ai-viewer-dist; the viewer's browser test then serves it instead of the stand-in page.
# OHIF_AI_SRC=<git URL or dir> (default GitHub), OHIF_AI_TREE=<checked-out tree>, OHIF_AI_RELOCK=1.
viewer-dist:
	bash tests/viewer/build_ohif_dist.sh

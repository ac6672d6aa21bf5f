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

.PHONY: setup qgis demo test test-backend test-plugin lint bench gpu-wheels gpu-check gpu-check-dry package deploy screenshot clean

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
	$(BIN)/python bench/outline_speed.py

# The GPU figures in one prepared run (README "Benchmarks"). `make gpu-wheels` (here, where pip reaches
# PyPI) downloads into .gpu-wheels/ the wheels a GPU machine's Python 3.12 lacks (it has its own torch,
# transformers, numpy, pandas...): rasterio and pyogrio at the releases whose wheels are smallest (each
# bundles GDAL; the newest would not fit), the rest as installed in .venv. The working tree and the
# wheels must stay under the 64 MiB that may travel to that machine: checked, with 2 MiB to spare.
# `make gpu-check` runs there (scripts/gpu_check.sh installs the wheels, then every part);
# `make gpu-check-dry` runs every part here on the CPU with the tiny models, to know the script works.
GPU_WHEELS_DIR := .gpu-wheels
GPU_WHEEL_PINS := rasterio==1.4.3 pyogrio==0.10.0
GPU_WHEELS_AS_VENV := affine cligj click-plugins shapely pyproj geopandas json-repair platformdirs
GPU_PLATFORMS := --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
MIB := 1048576

gpu-wheels: setup
	rm -rf $(GPU_WHEELS_DIR)
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d $(GPU_WHEELS_DIR) $(GPU_WHEEL_PINS) $$($(BIN)/python -c "import importlib.metadata as m; \
		print(' '.join(f'{d}=={m.version(d)}' for d in '$(GPU_WHEELS_AS_VENV)'.split()))")
	@wheels=$$(du -cb $(GPU_WHEELS_DIR)/*.whl | tail -1 | cut -f1); \
	tree=$$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1); \
	echo "gpu-wheels: $$(ls $(GPU_WHEELS_DIR)/*.whl | wc -l) wheels, $$((wheels / $(MIB))) MiB; working tree" \
		"$$((tree / $(MIB))) MiB; together $$(((wheels + tree) / $(MIB))) MiB of the 64 MiB that may travel"; \
	test $$((wheels + tree)) -le $$((62 * $(MIB))) || { echo "gpu-wheels: over 62 MiB: drop a wheel or" \
		"pick releases with smaller wheels (GPU_WHEEL_PINS)"; exit 1; }

gpu-check:
	scripts/gpu_check.sh results/gpu

gpu-check-dry: setup
	scripts/gpu_check.sh bench/out/gpu-check-dry --dry-run

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

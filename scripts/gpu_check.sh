#!/usr/bin/env bash
# The GPU figures in one command: scripts/gpu_check.sh OUT_DIR [gpu_check.py options]
#
# On the GPU machine (its own python3 with torch and transformers, no network): installs the wheels
# carried in .gpu-wheels/ (`make gpu-wheels`) into a folder of their own, leaving torch and
# transformers as they are, then runs scripts/gpu_check.py with the backend on PYTHONPATH.
# With --dry-run it uses this checkout's .venv instead and installs nothing (CPU, tiny models).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: scripts/gpu_check.sh OUT_DIR [--dry-run] [--budget-s S] [--only PARTS] [--cap PART=S]" >&2
  exit 2
fi
out_dir=$1
shift
mkdir -p "$out_dir"
if [[ " $* " == *" --dry-run "* ]]; then
  python=${PYTHON:-.venv/bin/python}
else
  python=${PYTHON:-python3}
  site=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
  if ! ls .gpu-wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_check: no wheels in .gpu-wheels/: run 'make gpu-wheels' where pip reaches PyPI, and carry .gpu-wheels" >&2
    exit 1
  fi
  echo "gpu_check: installing $(ls .gpu-wheels/*.whl | wc -l) wheels into $site (torch and transformers untouched)"
  "$python" -m pip install --quiet --no-index --find-links .gpu-wheels --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .gpu-wheels/*.whl 2>&1 | tee "$out_dir/install.log"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="backend/src:bench${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import rasterio, shapely, pyproj, pyogrio, geopandas, json_repair, torch, transformers, think2seg.engine" || {
  echo "gpu_check: the backend does not import with $python (see above): nothing was measured" >&2
  exit 1
}
exec "$python" scripts/gpu_check.py "$out_dir" "$@"

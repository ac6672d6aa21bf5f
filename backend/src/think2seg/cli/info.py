"""``think2seg info``: versions, device, GPU, cache folder and which default weights are present."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform

from think2seg._version import __version__
from think2seg.errors import DeviceError
from think2seg.models.device import plan_device
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER, cached_model_dir, hub_cache_dir

PACKAGES = (
    "torch",
    "torchvision",
    "transformers",
    "huggingface_hub",
    "numpy",
    "rasterio",
    "shapely",
    "pyproj",
    "geopandas",
    "pyogrio",
)
OPTIONAL = ("segment-anything", "flash-attn")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="show versions, device and weights", description=__doc__)
    parser.add_argument(
        "--device", default="auto", metavar="auto|cpu|cuda[:N]", help="device to describe (default auto)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(f"think2seg        {__version__} (python {platform.python_version()}, {platform.platform()})")
    for name in PACKAGES + OPTIONAL:
        print(f"{name:<16} {_version(name)}")
    print(f"{'GDAL':<16} {_gdal()}; PROJ {_proj()}; GEOS {_geos()}")
    for line in _device_lines(args.device):
        print(line)
    print(f"{'HF cache':<16} {hub_cache_dir()}")
    for repo_id in (DEFAULT_LVLM, DEFAULT_SEGMENTER):
        folder = cached_model_dir(repo_id)
        state = f"present: {folder}" if folder else "missing: run `think2seg download` (needs internet)"
        print(f"{'weights':<16} {repo_id}: {state}")
    return 0


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _device_lines(spec: str) -> list[str]:
    import torch

    build = f"torch CUDA build {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
    try:
        plan = plan_device(spec)
    except DeviceError as exc:
        return [f"{'device':<16} {spec}: {exc}"]
    lines = [
        f"{'device':<16} {spec} -> {plan.device}, {str(plan.dtype).removeprefix('torch.')}, attention {plan.attn_implementation} ({build})"
    ]
    if plan.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(plan.device)
        name = torch.cuda.get_device_name(plan.device)
        lines.append(f"{'GPU':<16} {name}, {total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free")
    else:
        lines.append(f"{'GPU':<16} none visible to PyTorch ({build})")
    return lines


def _gdal() -> str:
    import rasterio

    return rasterio.__gdal_version__


def _proj() -> str:
    import pyproj

    return pyproj.proj_version_str


def _geos() -> str:
    import shapely

    return shapely.geos_version_string

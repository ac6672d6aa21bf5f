"""Time per stage of one `think2seg segment` call on a 1024x1024 window.

    .venv/bin/python bench/segment_stages.py                 # CPU: the tiny test architectures
    .venv/bin/python bench/segment_stages.py --device cuda   # GPU: Qwen2.5-VL-3B + SAM 2.1 small sizes

Stages: read, prepare (840 view + the processor's input tensors), LVLM prefill, LVLM decode, parse,
SAM image encoding, SAM decoding, vectorize, write (GeoPackage).

The models have random weights, so their outputs mean nothing: the LVLM is made to write exactly
--new-tokens tokens and its text is then replaced by a fixed two-instance answer, and each SAM mask
is replaced by the sample scene's true river mask inside the instance's box. Both models still run
in full and are timed; the substitution only gives parse, vectorize and write the realistic input a
trained model would (random SAM weights give logits near 0 everywhere, i.e. thousands of
speckle polygons no trained model produces). The window is the bundled sample scene resampled to
--size pixels. Prints mean seconds per stage over --repeats runs after one warm-up, the share of
the non-model stages (read, parse, vectorize, write), and on CUDA the peak GPU memory; --json PATH
also writes these figures as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio import features
from rasterio.enums import Resampling
from shapely.geometry import Polygon

from think2seg.engine import Engine
from think2seg.geo.read import read_tile
from think2seg.models.device import plan_device
from think2seg.output.gpkg import write_gpkg
from think2seg.think2seg_rs.answer import InstancePrompt
from think2seg.timing import NON_MODEL_STAGES, STAGES, StageTimer

from stand_ins import FixedText, MaskMaker, SubstituteMasks, random_weight_models

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample" / "riverside.tif"
QUESTION = "segment the river"


def true_river(river: np.ndarray) -> MaskMaker:
    """The scene's true river inside each prompt's box."""

    def make(shape: tuple[int, int], prompts: Sequence[InstancePrompt]) -> np.ndarray:
        masks = np.zeros((len(prompts), *shape), dtype=bool)
        for k, prompt in enumerate(prompts):
            x1, y1, x2, y2 = (round(v) for v in prompt.box_xyxy)
            masks[k, y1:y2, x1:x2] = river[y1:y2, x1:x2]
        return masks

    return make


def river_mask(size: int) -> np.ndarray:
    """The sample scene's river (as drawn by make_sample.py) rasterized at size x size pixels."""
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE.with_name("make_sample.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scale = size / module.SIZE_PX
    river = Polygon([(x * scale, y * scale) for x, y in module.river_polygon()])
    return features.rasterize([river], out_shape=(size, size)).astype(bool)


def window_raster(folder: Path, size: int) -> Path:
    """The sample scene resampled to size x size pixels (same footprint, finer pixels)."""
    with rasterio.open(SAMPLE) as src:
        data = src.read(out_shape=(src.count, size, size), resampling=Resampling.bilinear)
        profile = src.profile | {
            "width": size,
            "height": size,
            "transform": src.transform * src.transform.scale(src.width / size),
        }
    path = folder / "window.tif"
    with rasterio.open(path, "w", **(profile | {"compress": "deflate", "photometric": "RGB"})) as dst:
        dst.write(data)
    return path


def build_engine(arch: str, device: str, folder: Path, new_tokens: int, size: int) -> Engine:
    prompter, segmenter = random_weight_models(arch, device, folder, new_tokens)
    return Engine(FixedText(prompter), SubstituteMasks(segmenter, true_river(river_mask(size))))


def run_once(engine: Engine, raster: Path, out: Path) -> tuple[dict[str, float], int]:
    timer = StageTimer()
    with timer.stage("read"):
        tile = read_tile(raster)
    result = engine.segment_tile(tile, QUESTION, timer=timer)
    with timer.stage("write"):
        write_gpkg(result, out, overwrite=True)
    return dict(timer.seconds), len(result.polygons)


def report(runs: list[dict[str, float]], polygons: int, args: argparse.Namespace) -> dict:
    """Prints the mean seconds per stage; returns the figures (what --json writes)."""
    means = {stage: statistics.mean(run.get(stage, 0.0) for run in runs) for stage in STAGES}
    total = sum(means.values())
    device = plan_device(args.device)
    print(
        f"\n{args.arch} architectures on {device.label}, {args.size}x{args.size} window, "
        f"{args.new_tokens} new tokens, {polygons} polygons, mean of {len(runs)} runs"
    )
    print(f"{'stage':<14}{'seconds':>10}{'share':>9}")
    for stage, seconds in means.items():
        print(f"{stage:<14}{seconds:>10.4f}{seconds / total:>9.1%}")
    non_model = sum(means[stage] for stage in NON_MODEL_STAGES)
    print(f"{'total':<14}{total:>10.4f}")
    print(f"non-model stages (read, parse, vectorize, write): {non_model:.4f} s = {non_model / total:.1%} of the total")
    print(f"model input preparation (prepare): {means['prepare'] / total:.1%} of the total")
    print(f"LVLM decode: {args.new_tokens / means['lvlm_decode']:.1f} tokens/s")
    peak = None
    if torch.cuda.is_available() and device.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory: {peak:.2f} GiB")
    return {
        "device": device.label,
        "arch": args.arch,
        "window_px": args.size,
        "new_tokens": args.new_tokens,
        "repeats": len(runs),
        "polygons": polygons,
        "seconds": means,
        "total_s": total,
        "non_model_share": non_model / total,
        "decode_tokens_per_s": args.new_tokens / means["lvlm_decode"],
        "peak_gib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", choices=("tiny", "real"), help="default: real on CUDA, tiny on CPU")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    on_cuda = plan_device(args.device).device.type == "cuda"
    args.arch = args.arch or ("real" if on_cuda else "tiny")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raster = window_raster(folder, args.size)
        engine = build_engine(args.arch, args.device, folder, args.new_tokens, args.size)
        run_once(engine, raster, folder / "warmup.gpkg")
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        results = [run_once(engine, raster, folder / "out.gpkg") for _ in range(args.repeats)]
    figures = report([r[0] for r in results], results[-1][1], args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())

"""Ray workers: the same tiles in this process and with 1, 2... workers, side by side in one run.

    .venv/bin/python bench/workers_scaling.py                   # CPU, tiny architectures, 25 tiles
    .venv/bin/python bench/workers_scaling.py --tiles-side 2 --new-tokens 8   # smoke run (4 tiles)
    .venv/bin/python bench/workers_scaling.py --device cuda     # GPU: real-size architectures, 1 worker per GPU

One generated raster (--tiles-side² tiles of 256 px, 32 px overlap) goes through ``run_batch`` with
``workers=0`` (the models in this process) and then with each of --workers Ray workers, all loading
the stand-in models of the other benchmarks (random weights, a fixed two-instance answer, ellipse
masks; see stand_ins.py). Ray is started once, before the runs, and its start-up is reported apart.
Per run: total wall time (model loading, and the workers' start-up, included), the time to the first
finished tile, and the steady rate: the tiles finished once N batches or chunks came back (N = the
workers, so each has started), over the time since. Every run must write the same ``segments`` polygons.

On a CPU the workers share its cores: Ray gives each a 1/N share, and it runs torch on that many
threads, while in this process torch uses all of them. So the ratio does not measure a gain of more
hardware: it compares N processes of 1/N the threads with one of all of them (and shows the workers'
start-up in the wall time). The tiny models' operations are too small to gain from intra-op threads,
so on a 2-core CPU one thread per worker can come out far ahead of two threads in one process
(``OMP_NUM_THREADS=1`` shows it in-process). On a GPU machine each worker holds one GPU, so the ratio
is the scaling over GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely

from think2seg.batch.options import BatchOptions, BatchProgress, ModelSpec
from think2seg.batch.runner import run_batch
from think2seg.engine import Engine
from think2seg.runs.microbatch import parse_batch_size

from stand_ins import FixedText, SubstituteMasks, ellipse_in_box, random_weight_models

TILE_PX, OVERLAP_PX = 256, 32
QUESTION = "segment the river"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class StandInSpec(ModelSpec):
    """The stand-in models, loaded by each Ray worker: ``lvlm``/``segmenter`` are the folders of the
    saved tiny architectures (ignored with ``arch="real"``, built in memory on the device)."""

    arch: str = "tiny"
    new_tokens: int = 128

    def load(self) -> Engine:
        if self.arch == "real":
            prompter, segmenter = random_weight_models("real", self.device, Path(), self.new_tokens)
        else:
            engine = Engine.load(lvlm=self.lvlm, segmenter=self.segmenter, device=self.device)
            prompter, segmenter = engine.prompter, engine.segmenter
            prompter.max_new_tokens = prompter.min_new_tokens = self.new_tokens  # type: ignore[attr-defined]
        return Engine(FixedText(prompter), SubstituteMasks(segmenter, ellipse_in_box))


def make_raster(path: Path, size: int) -> Path:
    """A size² RGB GeoTIFF of smooth random texture (no nodata, so every tile is segmented)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(40, 220, (3, size // 16 + 1, size // 16 + 1), dtype=np.uint8)
    pixels = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :size, :size]
    transform = rasterio.Affine(0.5, 0, 500000, 0, -0.5, 5300000)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs="EPSG:32633", transform=transform) as dst:
        dst.write(pixels)
    return path


def polygons(output: Path) -> list[bytes]:
    """The ``segments`` geometries in a canonical form and order."""
    frame = gpd.read_file(output, layer="segments")
    return sorted(shapely.to_wkb(shapely.normalize(frame.geometry.values)))


def one_run(raster: Path, output: Path, spec: StandInSpec, workers: int, batch_size: int | str) -> dict:
    events: list[tuple[float, int]] = []

    def seen(progress: BatchProgress) -> None:
        events.append((progress.elapsed_s, progress.done))

    options = BatchOptions(
        tile_size_px=TILE_PX, overlap_px=OVERLAP_PX, workers=workers, batch_size=batch_size, overwrite=True
    )
    summary = run_batch(raster, QUESTION, output, models=spec, options=options, on_progress=seen)
    groups: list[tuple[float, int]] = []  # (arrival, done after it): tiles that came back together
    for elapsed, done in events:
        if groups and elapsed - groups[-1][0] < 0.01:
            groups[-1] = (groups[-1][0], done)
        else:
            groups.append((elapsed, done))
    start_s, start_done = groups[min(max(workers, 1), len(groups)) - 1]  # once every worker sent a chunk
    last_s, last_done = events[-1]
    steady = (last_done - start_done) / (last_s - start_s) if last_done > start_done else None
    return {
        "workers": workers,
        "tiles": summary.tiles_total,
        "ok": summary.counts.get("ok", 0),
        "failed": summary.failed,
        "retries": summary.retries,
        "batch_size": summary.batch_size,
        "wall_s": summary.wall_s,
        "tiles_per_s": summary.tiles_total / summary.wall_s,
        "first_tile_s": groups[0][0],
        "steady_tiles_per_s": steady,
        "polygons": summary.polygons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--arch", choices=("tiny", "real"), help="default: tiny on a CPU, real on cuda")
    parser.add_argument("--workers", type=int, nargs="+", help="default: 1 2 on a CPU, 1..GPUs on cuda")
    parser.add_argument("--tiles-side", type=int, default=5, help="the raster holds side² tiles (default 5)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=parse_batch_size, default="auto")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    arch = args.arch or ("real" if gpu else "tiny")
    if args.workers is None:
        import torch

        args.workers = list(range(1, torch.cuda.device_count() + 1)) if gpu else [1, 2]
    import ray

    size = TILE_PX + (args.tiles_side - 1) * (TILE_PX - OVERLAP_PX)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raster = make_raster(folder / "r.tif", size)
        spec = StandInSpec(device=args.device, arch=arch, new_tokens=args.new_tokens)
        if arch == "tiny":  # saved once here; every worker loads them from the folder
            from think2seg.testing.tiny_lvlm import save_untrained_tiny_lvlm
            from think2seg.testing.tiny_sam import build_tiny_sam2

            lvlm, sam = save_untrained_tiny_lvlm(folder / "lvlm"), build_tiny_sam2(folder / "sam2")
            spec = StandInSpec(
                lvlm=str(lvlm), segmenter=str(sam), device=args.device, arch=arch, new_tokens=args.new_tokens
            )
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        ray_s = time.perf_counter() - started
        try:
            rows, shapes = [], []
            for workers in [0, *args.workers]:
                output = folder / f"out-{workers}.gpkg"
                rows.append(one_run(raster, output, spec, workers, args.batch_size))
                shapes.append(polygons(output))
        finally:
            ray.shutdown()
    report(args, arch, size, ray_s, rows, shapes)


def report(args: argparse.Namespace, arch: str, size: int, ray_s: float, rows: list[dict], shapes: list) -> None:
    base = next((r for r in rows if r["workers"] == 1), rows[0])
    cores = os.cpu_count()
    print(f"Ray workers, {arch} architectures on {args.device} ({cores} CPU cores), {args.new_tokens} new tokens")
    print(f"{size}x{size} raster, {TILE_PX} px tiles, {OVERLAP_PX} px overlap: {rows[0]['tiles']} tiles")
    print(f"Ray start-up (ray.init, before the runs): {ray_s:.1f} s\n")
    print(
        f"{'run':>12} {'wall s':>7} {'tiles/s':>8} {'first tile s':>13} {'steady tiles/s':>15}"
        f" {'x 1 worker':>11} {'ok':>4} {'retries':>8}"
    )
    for row in rows:
        name = "in-process" if not row["workers"] else f"{row['workers']} worker{'s' * (row['workers'] > 1)}"
        rate, base_rate = row["steady_tiles_per_s"], base["steady_tiles_per_s"]
        row["ratio_to_1_worker"] = rate / base_rate if rate and base_rate else None
        steady, ratio = (f"{rate:.3f}", f"{row['ratio_to_1_worker']:.2f}x") if row["ratio_to_1_worker"] else ("-", "-")
        print(
            f"{name:>12} {row['wall_s']:>7.1f} {row['tiles_per_s']:>8.3f} {row['first_tile_s']:>13.1f}"
            f" {steady:>15} {ratio:>11} {row['ok']:>4} {row['retries']:>8}"
        )
    same = all(s == shapes[0] for s in shapes)
    print(f"\nsame segments polygons in every run: {'yes' if same else 'NO'} ({len(shapes[0])} polygons in-process)")
    if not args.device.startswith("cuda"):
        import torch

        threads = ", ".join(f"{w} worker(s): {max(1, round(int(cores / w * 99) / 100))}" for w in args.workers)
        print(f"torch threads: in-process {torch.get_num_threads()}, {threads} each; the workers share the")
        print(f"{cores} CPU cores: the ratio is no gain of hardware (see the module docstring)")
    if args.json:
        figures = {"arch": arch, "device": args.device, "raster_px": size, "ray_init_s": ray_s, "same_polygons": same}
        args.json.write_text(json.dumps({**figures, "runs": rows}, indent=2))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    # Run the module imported by its name, so that Ray workers unpickle StandInSpec from
    # ``workers_scaling`` (found through the PYTHONPATH given to them), not from a __main__ of theirs.
    import workers_scaling

    workers_scaling.main()

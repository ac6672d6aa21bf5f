"""Batch throughput and memory: `think2seg batch` over rasters of growing size.

    .venv/bin/python bench/batch_throughput.py                  # CPU, tiny architectures
    .venv/bin/python bench/batch_throughput.py --device cuda    # GPU, real-size architectures

CPU part (tiny test architectures, random weights, 128 new tokens per answer):
1. Memory: rasters of 4096², 16384² and 32768² pixels, all nodata but the same 2048² block of
   content, so each run segments the same 9 tiles and skips the rest (reading each skipped tile).
   Each size runs in its own process; peak RSS must stay within 20% across sizes.
2. Pipelining: a 4096² raster full of content, run with tiles read and prepared in a background
   thread ahead of the models (--prefetch 4) and with reading in the models' thread (--prefetch
   0), side by side.

GPU part (--device cuda; Qwen2.5-VL-3B and SAM 2.1 hiera-small sizes with random weights, bf16):
tiles/s at batch sizes 1, 8 and 32 on an 8192² raster of content (81 tiles).

Random weights give meaningless outputs, so the LVLM's text is replaced by a fixed two-instance
answer and SAM's masks by ellipses in the instance boxes (see stand_ins.py); both models still run.

CLI part (--cli, any device; --json PATH writes its figures): the `think2seg batch` command itself,
as a user runs it, over a generated --size² raster of content with --batch-size (default auto). The
random-weight models are saved to folders first and the command loads them with --lvlm/--segmenter,
so there are no stand-ins: the LVLM writes --new-tokens tokens of noise that do not parse (each tile
is `unparseable`, SAM is not called), and the figures are those of reading, the LVLM and writing.
Reports tiles/s (without the models' loading), the batch size the run chose, and peak GPU memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.engine import Engine
from think2seg.runs.microbatch import parse_batch_size

from stand_ins import FixedText, SubstituteMasks, ellipse_in_box, random_weight_models

TILE_PX, OVERLAP_PX = 1024, 128
CONTENT_PX = 2048


def make_raster(path: Path, size: int, *, content: int) -> Path:
    """A size² RGB GeoTIFF, nodata 0 except a content² block of texture at the top left.

    Written sparse (blocks never written cost no disk), so even 32768² takes a moment.
    """
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(0.5, 0, 500000, 0, -0.5, 5300000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "sparse_ok": True,
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, content, 512):
            for col in range(0, content, 512):
                block = rng.integers(40, 220, (3, 512, 512), dtype=np.uint8)
                dst.write(block, window=Window(col, row, 512, 512))
    return path


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints a JSON line with its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raster = make_raster(folder / "r.tif", args.size, content=args.content)
        prompter, segmenter = random_weight_models(args.arch, args.device, folder, args.new_tokens)
        engine = Engine(FixedText(prompter), SubstituteMasks(segmenter, ellipse_in_box))
        options = BatchOptions(
            tile_size_px=TILE_PX, overlap_px=OVERLAP_PX, batch_size=args.batch_size, prefetch=args.prefetch
        )
        start = time.perf_counter()
        summary = run_batch(raster, "segment the river", folder / "out.gpkg", models=engine, options=options)
        wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_gib = _peak_gpu_gib()
    print(
        json.dumps(
            {
                "size": args.size,
                "tiles": summary.tiles_total,
                "segmented": summary.processed,
                "skipped": summary.skipped,
                "wall_s": wall,
                "tiles_per_s": summary.tiles_total / wall,
                "segmented_per_s": summary.processed / wall,
                "peak_rss_mib": peak_mib,
                "peak_gpu_gib": gpu_gib,
                "prefetch": args.prefetch,
                "batch_size": args.batch_size,
            }
        )
    )


def _peak_gpu_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def run_child(
    size: int, content: int, *, device: str, arch: str, prefetch: int = 4, batch_size: int = 1, new_tokens: int = 128
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--size",
        str(size),
        "--content",
        str(content),
        "--device",
        device,
        "--arch",
        arch,
        "--prefetch",
        str(prefetch),
        "--batch-size",
        str(batch_size),
        "--new-tokens",
        str(new_tokens),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_report(args: argparse.Namespace) -> None:
    print(f"Memory and throughput, tiny architectures on CPU, {TILE_PX} px tiles, {OVERLAP_PX} px overlap")
    print(f"{'raster':>12} {'tiles':>6} {'segmented':>10} {'tiles/s':>8} {'peak RSS MiB':>13}")
    rows = [run_child(size, CONTENT_PX, device=args.device, arch="tiny") for size in (4096, 16384, 32768)]
    for row in rows:
        print(
            f"{row['size']:>6}x{row['size']:<5} {row['tiles']:>6} {row['segmented']:>10} {row['tiles_per_s']:>8.2f} {row['peak_rss_mib']:>13.0f}"
        )
    peaks = [row["peak_rss_mib"] for row in rows]
    print(f"peak RSS spread across sizes: {(max(peaks) - min(peaks)) / min(peaks):.1%} (target: within 20%)\n")
    print("Pipelining, 4096x4096 raster full of content (25 tiles), side by side:")
    piped = run_child(4096, 4096, device=args.device, arch="tiny", prefetch=4)
    serial = run_child(4096, 4096, device=args.device, arch="tiny", prefetch=0)
    print(f"  read ahead in a thread (--prefetch 4): {piped['segmented_per_s']:.3f} tiles/s")
    print(f"  read in the models' thread (--prefetch 0): {serial['segmented_per_s']:.3f} tiles/s")
    print(f"  ratio: {piped['segmented_per_s'] / serial['segmented_per_s']:.2f}x")


def gpu_report(args: argparse.Namespace) -> None:
    print("Real-size architectures (Qwen2.5-VL-3B, SAM 2.1 hiera-small), random weights, bf16, 128 new tokens")
    print(f"{'batch':>6} {'tiles/s':>8} {'peak GPU GiB':>13}")
    for batch_size in (1, 8, 32):
        row = run_child(8192, 8192, device=args.device, arch="real", batch_size=batch_size)
        print(f"{batch_size:>6} {row['segmented_per_s']:>8.2f} {row['peak_gpu_gib']:>13.1f}")


def save_models(arch: str, device: str, folder: Path, new_tokens: int) -> tuple[Path, Path]:
    """The random-weight prompter and segmenter saved as model folders (what --lvlm/--segmenter load)."""
    import torch

    prompter, segmenter = random_weight_models(arch, device, folder / "built", new_tokens)
    lvlm, sam = folder / "lvlm", folder / "sam2"
    for model, path in ((prompter, lvlm), (segmenter, sam)):
        model.model.save_pretrained(path)
        model.processor.save_pretrained(path)
    del prompter, segmenter
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return lvlm, sam


def cli_run(args: argparse.Namespace) -> dict:
    """``think2seg batch`` over a generated raster with saved random-weight models; its figures."""
    from think2seg.cli import main as think2seg

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        raster = make_raster(folder / "r.tif", args.size, content=args.size)
        lvlm, sam = save_models(args.arch, args.device, folder, args.new_tokens)
        prepared_s = time.perf_counter() - start
        command = ["batch", str(raster), "segment the river", "-o", str(folder / "out.gpkg"), "--quiet"]
        command += ["--batch-size", str(args.batch_size), "--lvlm", str(lvlm), "--segmenter", str(sam)]
        command += ["--device", args.device, "--max-new-tokens", str(args.new_tokens)]
        printed = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            code = think2seg(command)
        wall = time.perf_counter() - start
    print(printed.getvalue(), end="", flush=True)
    if code not in (0, 3):
        raise SystemExit(f"think2seg batch exited with {code}")
    figures = parse_batch_summary(printed.getvalue())
    run_s = figures["wall_s"] - figures["load_s"]
    figures |= {"command": "think2seg " + " ".join(command[:2]) + " ...", "exit_code": code, "raster_px": args.size}
    figures |= {"cli_wall_s": wall, "prepare_s": prepared_s, "tiles_per_s": figures["tiles"] / run_s}
    return figures | {"peak_gpu_gib": _peak_gpu_gib(), "device": args.device, "arch": args.arch}


SUMMARY_LINES = {
    "tiles": r"^tiles\s+(\d+) in the grid",
    "segmented": r"segmented now (\d+)",
    "batch_size": r"^batches\s+(\d+) tile\(s\) at once",
    "wall_s": r"^time\s+wall ([\d.]+)s",
    "load_s": r"\bload ([\d.]+)s",
}


def parse_batch_summary(text: str) -> dict:
    """The figures of the summary `think2seg batch` prints (its tiles, batch size, wall and load
    seconds, and the count of each tile status)."""
    figures: dict = {}
    for name, pattern in SUMMARY_LINES.items():
        found = re.search(pattern, text, re.MULTILINE)
        if found is None and name != "load_s":  # no load stage: every tile was skipped
            raise SystemExit(f"no {name!r} in the summary of think2seg batch:\n{text}")
        figures[name] = (float if name.endswith("_s") else int)(found.group(1)) if found else 0.0
    statuses = re.search(r"segmented now \d+ \(([^)]*)\)", text)
    pairs = [part.rsplit(" ", 1) for part in statuses.group(1).split(", ")] if statuses else []
    return figures | {"statuses": {status: int(count) for status, count in pairs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cli", action="store_true", help="time the think2seg batch command (see above)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="with --cli: also write the figures here as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=4096, help="with --cli: the raster's side in pixels")
    parser.add_argument("--content", type=int, default=CONTENT_PX, help=argparse.SUPPRESS)
    parser.add_argument("--arch", default="tiny", help="with --cli: tiny or real (default tiny)")
    parser.add_argument("--prefetch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=parse_batch_size, help="with --cli: N or auto (default auto)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens per answer (default 128)")
    args = parser.parse_args()
    if args.cli:
        args.batch_size = args.batch_size or "auto"
        figures = cli_run(args)
        print(json.dumps(figures))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
        return
    args.batch_size = args.batch_size or 1
    if args.child:
        child(args)
    elif args.device.startswith("cuda"):
        gpu_report(args)
    else:
        cpu_report(args)


if __name__ == "__main__":
    main()

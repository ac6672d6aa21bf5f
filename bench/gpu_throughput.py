"""Tiles per second: the reference loop against the batched path, side by side in one run.

    .venv/bin/python bench/gpu_throughput.py                # CUDA: Qwen2.5-VL-3B + SAM 2.1 small sizes
    .venv/bin/python bench/gpu_throughput.py --device cpu   # CPU: the tiny test architectures (smoke run)

The same in-memory tiles go through each path:

  reference-b1   one tile at a time: the 840 view and processor, plain ``generate``, one SAM
                 encoding, one SAM decoder call per instance (the published inference loop)
  reference-bN   plain ``generate`` on --reference-batch tiles at once (left-padded), then SAM as above
  optimized      ``Engine.infer_batch`` at --batch-size (auto: what fits the free GPU memory), views made
                 by a reader thread while the models work, SAM encoded in chunks, one decoder call per tile
  +compile       (with --compile) the optimized path with a static KV cache and a compiled decoding step

--paths picks which of them run (b1, bN, optimized, compiled; e.g. ``--paths compiled`` times the
compiled path alone) and --json PATH also writes the figures as JSON, rewritten after each path, so a
run stopped part-way still leaves the paths it finished.

The models have random weights and write exactly --new-tokens tokens; their text is then replaced by a
two-instance answer so SAM does a trained model's work. Each path is warmed up before it is timed.
Reported per path: tiles/s, milliseconds per tile per stage, peak GPU memory, and the decode step
against its roofline: the bytes one step must read (the language model's weights, plus the KV cache)
divided by the memory bandwidth measured here with a device-to-device copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rasterio.transform import from_origin

from think2seg.engine import Engine
from think2seg.geo.arrays import tile_from_array
from think2seg.models.qwen import GenerationClock, QwenPrompter
from think2seg.runs.microbatch import BatchSizer, parse_batch_size
from think2seg.think2seg_rs.answer import parse_answer
from think2seg.think2seg_rs.prompt import make_view
from think2seg.tile import Tile
from think2seg.timing import StageTimer

from stand_ins import ANSWER, FixedText, random_weight_models

QUESTION = "segment the river and the flooded fields beside it"
SCALE = (840, 840)
PATHS = ("b1", "bN", "optimized", "compiled")
"""What --paths names: reference-b1, reference-b<--reference-batch>, optimized, optimized+compile."""


@dataclasses.dataclass
class PathResult:
    name: str
    batch: int
    tiles: int
    wall_s: float
    timer: StageTimer
    peak_gib: float
    decode_step_ms: float

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.wall_s

    def ms_per_tile(self) -> dict[str, float]:
        return {stage: 1000 * seconds / self.tiles for stage, seconds in self.timer.seconds.items()}


def make_tiles(count: int, size: int, seed: int = 0) -> list[Tile]:
    """Smooth random scenes (not noise, so the encoders see image-like statistics)."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        coarse = rng.integers(0, 255, (size // 32 + 1, size // 32 + 1, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
        tiles.append(tile_from_array(pixels, transform=from_origin(500000, 5000000, 0.5, 0.5), crs="EPSG:32633"))
    return tiles


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the reference loop -------------------------------------------------------------------------------


def reference_path(prompter: QwenPrompter, segmenter, tiles: list[Tile], batch: int) -> tuple[StageTimer, float]:
    """Plain generate on ``batch`` tiles at once, SAM one tile and one instance at a time.

    Returns the stage times and the decode time per step.
    """
    timer, decode_s, steps = StageTimer(), 0.0, 0
    for start in range(0, len(tiles), batch):
        chunk = tiles[start : start + batch]
        begin = time.perf_counter()
        with timer.stage("prepare"):
            inputs = prompter.model_inputs([make_view(t.pixels) for t in chunk], [QUESTION] * len(chunk))
        clock = GenerationClock(prompter.device)
        with torch.inference_mode():
            output = prompter.model.generate(
                **inputs,
                logits_processor=[clock],
                do_sample=False,
                max_new_tokens=prompter.max_new_tokens,
                min_new_tokens=prompter.min_new_tokens,
            )
        new_ids = output[:, inputs["input_ids"].shape[1] :].cpu()
        done = time.perf_counter()
        prompter.processor.batch_decode(new_ids, skip_special_tokens=True)
        _, prefill = clock.split(begin, done)
        timer.add("lvlm_prefill", prefill)
        timer.add("lvlm_decode", done - clock.prepared_at - prefill)
        decode_s, steps = decode_s + done - clock.prepared_at - prefill, steps + new_ids.shape[1] - 1
        for tile in chunk:
            with timer.stage("parse"):
                prompts = [
                    p.scaled(tile.width / SCALE[0], tile.height / SCALE[1]) for p in parse_answer(ANSWER).instances
                ]
            with timer.stage("sam_encode"):
                embedding = segmenter.encode(tile.pixels)
                sync(segmenter.device)
            with timer.stage("sam_decode"):
                masks = [segmenter.predict_logits(embedding, [prompt])[0] > 0 for prompt in prompts]
                np.logical_or.reduce(masks, axis=0)
    return timer, decode_s / max(steps, 1)


# --- the optimized path -------------------------------------------------------------------------------


def optimized_path(engine: Engine, tiles: list[Tile], sizer: BatchSizer) -> tuple[StageTimer, float]:
    """Engine.infer_batch on batches of ``sizer.size``; a thread makes the views ahead."""
    timer, decode_s, steps = StageTimer(), 0.0, 0
    for chunk, views in _viewed(tiles, sizer.size):
        timers = [StageTimer() for _ in chunk]
        inferences = sizer.run(list(zip(chunk, views, timers)), functools.partial(_infer, engine))
        for tile_timer in timers:
            timer.merge(tile_timer.seconds)
        decode_s += sum(t.seconds.get("lvlm_decode", 0.0) for t in timers)
        steps += max(i.new_tokens for i in inferences) - 1
    return timer, decode_s / max(steps, 1)


def _infer(engine: Engine, items: list[tuple[Tile, Image.Image, StageTimer]]) -> list:
    tiles, views, timers = zip(*items)
    return engine.infer_batch(list(tiles), QUESTION, views=list(views), timers=list(timers))


def _viewed(tiles: list[Tile], size: int) -> Iterator[tuple[list[Tile], list[Image.Image]]]:
    """Batches of tiles with their 840 views, the next batch's views made while this one runs."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="views") as pool:
        chunks = [tiles[start : start + size] for start in range(0, len(tiles), size)]
        pending = [pool.submit(lambda c=chunk: [make_view(t.pixels) for t in c]) for chunk in chunks[:1]]
        for index, chunk in enumerate(chunks):
            if index + 1 < len(chunks):
                pending.append(pool.submit(lambda c=chunks[index + 1]: [make_view(t.pixels) for t in c]))
            yield chunk, pending[index].result()


# --- measuring ----------------------------------------------------------------------------------------


def timed(name: str, batch: int, tiles: list[Tile], run: Callable[[], tuple[StageTimer, float]], device) -> PathResult:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    timer, step_s = run()
    sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return PathResult(name, batch, len(tiles), wall, timer, peak, step_s * 1000)


def bandwidth_gbs(device: torch.device, mib: int) -> float:
    """Memory bandwidth of a large device-to-device copy (bytes read plus written per second)."""
    source = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    sync(device)
    start, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        target.copy_(source)
    sync(device)
    return 2 * source.numel() * repeats / (time.perf_counter() - start) / 1e9


def step_bytes(prompter: QwenPrompter, batch: int, prompt_tokens: int) -> float:
    """Bytes one decoding step reads: the language model's weights (lm_head included, the embedding
    lookup not) and the batch's KV cache at the answer's mid-point."""
    model = prompter.model
    text = model.config.text_config
    language = model.model.language_model
    weights = sum(p.numel() * p.element_size() for n, p in language.named_parameters() if "embed_tokens" not in n)
    weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * model.dtype.itemsize
    return weights + batch * (prompt_tokens + prompter.max_new_tokens / 2) * kv_token


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cuda[:N] or cpu (default auto)")
    parser.add_argument("--arch", choices=("real", "tiny"), help="default: real on CUDA, tiny on the CPU")
    parser.add_argument("--new-tokens", type=int, help="tokens forced per answer (default 256; 16 on the CPU)")
    parser.add_argument("--tile-size", type=int, help="tile side in pixels (default 1024; 256 on the CPU)")
    parser.add_argument("--batch-size", type=parse_batch_size, default="auto", help="optimized batch (default auto)")
    parser.add_argument("--batches", type=int, default=2, help="optimized batches timed (default 2)")
    parser.add_argument("--reference-tiles", type=int, default=8, help="tiles for reference-b1 (default 8)")
    parser.add_argument("--reference-batch", type=int, default=20, help="the plain-generate batch (default 20)")
    parser.add_argument("--compile", action="store_true", help="also time the static-cache, compiled path")
    parser.add_argument(
        "--paths",
        type=_paths,
        default=("b1", "bN", "optimized"),
        help="comma-separated paths to time, of b1, bN, optimized, compiled (default b1,bN,optimized; "
        "--compile adds compiled)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.compile and "compiled" not in args.paths:
        args.paths = (*args.paths, "compiled")
    return args


def _paths(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in PATHS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--paths takes a comma-separated list of {', '.join(PATHS)}, not {text!r}")
    return names


def main(argv: list[str] | None = None) -> list[PathResult]:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device_name = args.device if args.device != "auto" else ("cuda" if cuda else "cpu")
    arch = args.arch or ("real" if cuda else "tiny")
    new_tokens = args.new_tokens or (256 if cuda else 16)
    size = args.tile_size or (1024 if cuda else 256)
    with tempfile.TemporaryDirectory() as folder:
        prompter, segmenter = random_weight_models(arch, device_name, Path(folder), new_tokens)
        results = run_paths(prompter, segmenter, args, new_tokens, size, arch)
    return results


def run_paths(
    prompter: QwenPrompter, segmenter, args: argparse.Namespace, new_tokens: int, size: int, arch: str
) -> list[PathResult]:
    device = prompter.device
    engine = Engine(FixedText(prompter), segmenter)
    sizer = BatchSizer.plan(args.batch_size, engine)
    tiles = make_tiles(max(sizer.size * args.batches, args.reference_batch, args.reference_tiles), size)
    input_ids = prompter.model_inputs([make_view(tiles[0].pixels)], [QUESTION])["input_ids"]
    prompt_tokens = int(input_ids.shape[1])
    image_tokens = int((input_ids == prompter.model.config.image_token_id).sum())  # 900 for the real processor
    print(
        f"device {_device_label(device)}; {arch} architectures; {size}x{size} tiles; {new_tokens} new tokens; "
        f"{prompt_tokens} prompt tokens, {image_tokens} of them the image's",
        flush=True,
    )

    def reference(batch: int, count: int) -> PathResult:
        reference_path(prompter, segmenter, tiles[:batch], batch)  # warm-up
        run = lambda: reference_path(prompter, segmenter, tiles[:count], batch)  # noqa: E731
        return timed(f"reference-b{batch}", batch, tiles[:count], run, device)

    def optimized(name: str) -> PathResult:
        count = sizer.size * args.batches
        optimized_path(engine, tiles[: sizer.size], sizer)  # warm-up (and compilation, with --compile)
        return timed(name, sizer.size, tiles[:count], lambda: optimized_path(engine, tiles[:count], sizer), device)

    def compiled() -> PathResult:
        prompter.static_cache = True
        try:
            return optimized("optimized+compile")
        finally:
            prompter.static_cache = False

    runs = {
        "b1": lambda: reference(1, args.reference_tiles),
        "bN": lambda: reference(args.reference_batch, args.reference_batch),
        "optimized": lambda: optimized("optimized"),
        "compiled": compiled,
    }
    bandwidth = bandwidth_gbs(device, 1024 if device.type == "cuda" else 256)
    setup = {"device": _device_label(device), "arch": arch, "tile_px": size, "new_tokens": new_tokens}
    setup |= {"prompt_tokens": prompt_tokens, "image_tokens": image_tokens, "bandwidth_gbs": bandwidth}
    results: list[PathResult] = []
    for name in [name for name in PATHS if name in args.paths]:
        if args.json:
            write_json(args.json, results, setup, prompter, running=name)
        results.append(runs[name]())
        print(f"{results[-1].name}: {results[-1].tiles_per_s:.3g} tiles/s", flush=True)
    if args.json:
        write_json(args.json, results, setup, prompter, running=None)
    print(report(results, prompter, prompt_tokens, bandwidth), flush=True)
    return results


def write_json(
    path: Path, results: list[PathResult], setup: dict, prompter: QwenPrompter, *, running: str | None
) -> None:
    """The paths finished so far, and the one ``running`` now (None: all done), as JSON; replaced
    atomically, so a reader never sees half a file."""
    paths = []
    for r in results:
        roofline_ms = 1000 * step_bytes(prompter, r.batch, setup["prompt_tokens"]) / (setup["bandwidth_gbs"] * 1e9)
        paths.append(
            {
                "name": r.name,
                "batch": r.batch,
                "tiles": r.tiles,
                "wall_s": r.wall_s,
                "tiles_per_s": r.tiles_per_s,
                "ms_per_tile": r.ms_per_tile(),
                "peak_gib": r.peak_gib if r.peak_gib == r.peak_gib else None,  # NaN off CUDA
                "decode_step_ms": r.decode_step_ms,
                "roofline_step_ms": roofline_ms,
                "roofline_fraction": roofline_ms / r.decode_step_ms if r.decode_step_ms > 0 else None,
            }
        )
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(setup | {"complete": running is None, "running": running, "paths": paths}, indent=1))
    os.replace(partial, path)


def report(results: list[PathResult], prompter: QwenPrompter, prompt_tokens: int, bandwidth: float) -> str:
    stages = ["prepare", "lvlm_prefill", "lvlm_decode", "parse", "sam_encode", "sam_decode"]
    head = "| path | batch | tiles | tiles/s | vs b1 | " + " | ".join(f"{s} ms" for s in stages)
    head += " | peak GiB | decode ms/step | roofline ms/step | of roofline |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by_name = {r.name: r for r in results}
    base = by_name.get("reference-b1")
    for r in results:
        per_tile = r.ms_per_tile()
        roofline = 1000 * step_bytes(prompter, r.batch, prompt_tokens) / (bandwidth * 1e9)
        cells = [r.name, str(r.batch), str(r.tiles), f"{r.tiles_per_s:.3g}"]
        cells.append(f"{r.tiles_per_s / base.tiles_per_s:.2f}x" if base else "-")
        cells += [f"{per_tile.get(s, 0.0):.1f}" for s in stages]
        peak = f"{r.peak_gib:.1f}" if r.peak_gib == r.peak_gib else "-"  # NaN off CUDA
        cells += [peak, f"{r.decode_step_ms:.2f}", f"{roofline:.2f}"]
        cells.append(f"{roofline / r.decode_step_ms:.0%}" if r.decode_step_ms > 0 else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nmemory bandwidth (device copy): {bandwidth:.0f} GB/s")
    plain = next((r for r in results if r.name.startswith("reference-b") and r is not base), None)
    if "optimized" in by_name and base and plain:
        best = by_name["optimized"].tiles_per_s
        lines.append(
            f"optimized vs reference-b1: {best / base.tiles_per_s:.1f}x; "
            f"vs {plain.name}: {best / plain.tiles_per_s:.1f}x"
        )
    return "\n".join(lines)


def _device_label(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

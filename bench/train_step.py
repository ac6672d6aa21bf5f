"""Seconds per GRPO step and peak memory of ``think2seg train``, LoRA and full fine-tuning side by side.

    .venv/bin/python bench/train_step.py                          # CPU, tiny architectures
    .venv/bin/python bench/train_step.py --arch real --device cuda --generations 16 --completion-length 1024

Each method runs in its own process (so peak memory is its own): ``train`` on a generated folder
dataset of --samples images (no validation split, so no evaluation), --steps optimizer steps of one
prompt x --generations answers. ``tiny`` is the test architecture (random weights: its answers run
to the length limit, as the paper's settings assume); ``real`` is Qwen2.5-VL-3B and SAM 2.1
hiera-small with random weights (same FLOPs as the released models; never for quality), saved to a
temporary folder first. Seconds per step leave out the first step (warm-up); peak memory is the
process's resident set on the CPU and ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one method, prints JSON
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args, args.one)))
        return
    with tempfile.TemporaryDirectory() as folder:
        models = _save_models(args.arch, Path(folder))
        rows = [_child(args, method, models) for method in args.methods.split(",")]
    _print(args, rows)


def _save_models(arch: str, folder: Path) -> Path:
    from think2seg.testing.tiny_lvlm import save_untrained_tiny_lvlm
    from think2seg.testing.tiny_sam import build_tiny_sam2

    if arch == "tiny":
        save_untrained_tiny_lvlm(folder / "lvlm")
        build_tiny_sam2(folder / "sam2")
        return folder
    from think2seg.models.device import plan_device
    from think2seg.testing.real_arch import random_qwen25vl_3b, random_sam21_small

    plan = plan_device("cpu")
    prompter = random_qwen25vl_3b(plan, new_tokens=1)
    prompter.model.to(torch.bfloat16).save_pretrained(folder / "lvlm")
    prompter.processor.save_pretrained(folder / "lvlm")
    segmenter = random_sam21_small(plan)
    segmenter.model.save_pretrained(folder / "sam2")
    segmenter.processor.save_pretrained(folder / "sam2")
    return folder


def _child(args: argparse.Namespace, method: str, models: Path) -> dict:
    command = [sys.executable, __file__, "--one", method, "--models", str(models), "--device", args.device]
    command += ["--steps", str(args.steps), "--generations", str(args.generations)]
    command += ["--completion-length", str(args.completion_length), "--samples", str(args.samples)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"method": method, "error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _measure(args: argparse.Namespace, method: str) -> dict:
    from think2seg.train.grpo import TrainSettings
    from think2seg.train.run import TrainRequest, train
    from think2seg.train.sources import DatasetData

    work = Path(tempfile.mkdtemp(prefix="train-step-"))
    data = _dataset(work / "data", args.samples)
    settings = TrainSettings(
        max_steps=args.steps,
        generations=args.generations,
        prompts_per_step=1,
        max_completion_length=args.completion_length,
        full=method == "full",
        save_steps=10_000,
    )
    request = TrainRequest(
        work / "run",
        DatasetData("folder", data, val_fraction=0.0),
        settings,
        lvlm=str(args.models / "lvlm"),
        segmenter=str(args.models / "sam2"),
        device=args.device,
        examples=0,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(request)
    cuda = args.device.startswith("cuda")
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    curve = result.record["curve"]
    return {
        "method": method,
        "seconds_per_step": result.record.get("step_seconds"),
        "mean_answer_tokens": float(np.mean([p["mean_length"] for p in curve])),
        "peak_memory_gib": peak / 2**30,
        "device": result.record.get("device"),
    }


def _dataset(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    mask = np.zeros((512, 512), dtype=np.uint8)
    mask[100:300, 150:350] = 255
    entries = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(root / f"{i}.png")
        Image.fromarray(mask).save(root / f"{i}_mask.png")
        entries.append({"image": f"{i}.png", "mask": f"{i}_mask.png", "question": "segment the field"})
    (root / "samples.json").write_text(json.dumps(entries))
    return root


def _print(args: argparse.Namespace, rows: list[dict]) -> None:
    print(
        f"GRPO step: {args.arch} architectures on {args.device}, 1 prompt x {args.generations} answers "
        f"of up to {args.completion_length} tokens, {args.steps} steps (the first left out)"
    )
    print("| method | s/step | answer tokens | peak memory GiB | device |")
    print("|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['method']} | failed: {row['error']} | | | |")
            continue
        step = row["seconds_per_step"]
        print(
            f"| {row['method']} | {step:.3f} | {row['mean_answer_tokens']:.0f} | "
            f"{row['peak_memory_gib']:.2f} | {row['device']} |"
            if step is not None
            else f"| {row['method']} | (too few steps) | | | |"
        )


if __name__ == "__main__":
    main()

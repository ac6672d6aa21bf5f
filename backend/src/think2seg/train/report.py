"""``RUN/report.md``: validation scores before and after training, the run's figures, and pictures.

Each picture (``RUN/examples/*.png``) shows one validation sample: the image, its ground truth,
and the base and trained models' masks with their prompts, IoU and answer. The samples shown are
those whose IoU changed most (ties by id), so the pictures show what training changed.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from think2seg.eval.cache import EvalCache
from think2seg.eval.datasets import Sample
from think2seg.eval.predict import load
from think2seg.eval.visualize import GREEN, ORANGE, PANEL_PX, draw_prompts, overlay
from think2seg.output.atomic import atomic_output

ROWS = (
    ("gIoU", "giou"),
    ("cIoU", "ciou"),
    ("Precision@0.5", None),
    ("parse failures", "parse_failure_rate"),
    ("mean answer tokens", "mean_new_tokens"),
)


def write_report(run_dir: Path, record: dict[str, Any], val: Sequence[Sample], *, examples: int) -> Path:
    """Write ``report.md`` (atomically) and its example pictures; returns the report's path."""
    pictures = _examples(run_dir, record, val, examples)
    text = "\n".join(
        [
            "# think2seg training run",
            "",
            f"Base model `{record['params']['lvlm']}`, segmenter `{record['params']['segmenter']}`, "
            f"on {record.get('device', '?')}. Trained model: `{run_dir / 'lvlm'}` (pass it as `--lvlm`).",
            "",
            *_scores(record),
            "",
            *_training(record),
            "",
            *_data(record),
            "",
            *(["## Examples", "", *(f"![{p.stem}](examples/{p.name})" for p in pictures)] if pictures else []),
        ]
    )
    target = run_dir / "report.md"
    with atomic_output(target, overwrite=True) as temporary:
        temporary.write_text(text + "\n", encoding="utf-8")
    return target


def _scores(record: dict[str, Any]) -> list[str]:
    before, after = record.get("before"), record.get("after")
    if not before or not after:
        return ["## Validation", "", "No validation samples: nothing was scored (give a validation split)."]
    b, a = before["metrics"], after["metrics"]
    lines = [
        "## Validation (greedy, `think2seg eval` native protocol)",
        "",
        f"{b['samples']} validation samples.",
        "",
        "| | before | after | change |",
        "|---|---|---|---|",
    ]
    for label, key in ROWS:
        old = b["precision"]["0.5"] if key is None else b[key]
        new = a["precision"]["0.5"] if key is None else a[key]
        scale = 1 if key == "mean_new_tokens" else 100
        lines.append(f"| {label} | {scale * old:.2f} | {scale * new:.2f} | {scale * (new - old):+.2f} |")
    return lines


def _training(record: dict[str, Any]) -> list[str]:
    settings = record["params"]["settings"]
    curve = record.get("curve", [])
    lines = [
        "## Training",
        "",
        f"{record.get('steps', 0)} GRPO steps, {settings['method']}, {settings['generations']} answers per prompt, "
        f"{settings['prompts_per_step']} prompt(s) per step, learning rate {settings['learning_rate']:g}, "
        f"KL beta {settings['beta']:g}, clip epsilon {settings['epsilon']:g}, temperature {settings['temperature']:g}, "
        f"loss `{settings['loss_type']}`, answers up to {settings['max_completion_length']} tokens.",
    ]
    if record.get("step_seconds"):
        lines.append(f"{record['step_seconds']:.2f} s per step on {record.get('device', '?')}.")
    if curve:
        head, tail = curve[: max(1, len(curve) // 5)], curve[-max(1, len(curve) // 5) :]
        first, last = np.mean([p["reward"] for p in head]), np.mean([p["reward"] for p in tail])
        lines.append(
            f"Mean reward (of 4: 2 x IoU + valid JSON + format) {first:.3f} over the first steps, "
            f"{last:.3f} over the last; the whole curve is in train.json."
        )
    return lines


def _data(record: dict[str, Any]) -> list[str]:
    data = record.get("data", {})
    lines = ["## Data", ""]
    for key, value in {**data, **data.get("counts", {})}.items():
        if key in ("notes", "counts"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k or 'all'} {v}" for k, v in value.items())
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines += [f"- note: {note}" for note in data.get("notes", [])]
    return lines


def _examples(run_dir: Path, record: dict[str, Any], val: Sequence[Sample], count: int) -> list[Path]:
    if count <= 0 or not val or not record.get("before") or not record.get("after"):
        return []
    caches = [_cache(Path(record[name]["report"])) for name in ("before", "after")]
    by_id = {s.sample_id: s for s in val}
    shared = [i for i in by_id if all(i in c.records for c in caches)]
    change = {i: abs(caches[1].scores[i].iou - caches[0].scores[i].iou) for i in shared}
    chosen = sorted(shared, key=lambda i: (-change[i], i))[:count]
    folder = run_dir / "examples"
    folder.mkdir(exist_ok=True)
    paths = []
    for rank, sample_id in enumerate(chosen, 1):
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(sample_id).with_suffix("").as_posix()).strip("_")[-60:]
        path = folder / f"{rank:02d}_{safe}.png"
        _figure(by_id[sample_id], caches).save(path)
        paths.append(path)
    return paths


def _cache(report: Path) -> EvalCache:
    cache = EvalCache(report)
    cache.clean(retry_failed=False)  # reads the cached predictions
    return cache


def _figure(sample: Sample, caches: list[EvalCache]) -> Image.Image:
    loaded = load(sample)
    image = loaded.image
    panels = [Image.fromarray(image), overlay(image, loaded.target, GREEN)]
    captions = ["image", "ground truth"]
    for name, cache in zip(("before", "after"), caches):
        mask = np.asarray(Image.open(cache.mask_path(sample.sample_id))) > 127
        record = cache.records[sample.sample_id]
        panels.append(draw_prompts(overlay(image, mask, ORANGE), record.get("prompts", [])))
        captions.append(f"{name}: IoU {cache.scores[sample.sample_id].iou:.3f}")
    scale = PANEL_PX / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    answers = [cache.records[sample.sample_id].get("raw_answer", "") for cache in caches]
    text_rows = 2 + sum(min(3, len(textwrap.wrap(a, 140)) or 1) for a in answers)
    canvas = Image.new("RGB", (size[0] * len(panels), size[1] + 20 + 14 * text_rows), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), f"{sample.sample_id}: {sample.question[:150]}", fill="black")
    for index, (panel, caption) in enumerate(zip(panels, captions)):
        canvas.paste(panel.resize(size, Image.Resampling.BILINEAR), (index * size[0], 20))
        draw.text((index * size[0] + 4, 22), caption, fill="white", stroke_width=2, stroke_fill="black")
    y = size[1] + 24
    for name, answer in zip(("before", "after"), answers):
        for line in (textwrap.wrap(f"{name}: {answer}", 140) or [f"{name}:"])[:3]:
            draw.text((4, y), line, fill="black")
            y += 14
    return canvas

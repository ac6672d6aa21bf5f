"""Pictures of the worst samples: image, ground truth, prediction with its prompts, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from think2seg.eval.datasets import Sample
from think2seg.eval.metrics import SampleScore
from think2seg.eval.predict import load, resize_mask
from think2seg.think2seg_rs.prompt import make_view

if TYPE_CHECKING:
    from think2seg.eval.cache import EvalCache

PANEL_PX = 420
GREEN, ORANGE, BLUE = (40, 200, 60), (255, 140, 0), (30, 120, 255)


def save_worst(
    samples: Sequence[Sample], scores: Sequence[SampleScore], cache: EvalCache, folder: Path, count: int
) -> list[str]:
    """Write ``count`` PNGs for the lowest-IoU samples into ``folder``; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {s.sample_id: s for s in samples}
    names = []
    scored = [s for s in scores if not s.failed]  # a failed sample has no prediction to draw
    for rank, item in enumerate(sorted(scored, key=lambda s: (s.iou, s.sample_id))[:count], 1):
        sample = by_id[item.sample_id]
        name = f"{rank:02d}_{cache.mask_path(item.sample_id).stem}.png"
        _figure(sample, item, cache.records[item.sample_id], cache.mask_path(item.sample_id)).save(folder / name)
        names.append(name)
    return names


def _figure(sample: Sample, item: SampleScore, record: dict, mask_path: Path) -> Image.Image:
    loaded = load(sample)
    predicted = np.asarray(Image.open(mask_path)) > 127
    image, target = loaded.image, loaded.target
    if predicted.shape != target.shape:  # the paper protocol scores at 840x840
        image, target = np.asarray(make_view(image)), resize_mask(target, predicted.shape[0])
    panels = [
        Image.fromarray(image),
        overlay(image, target, GREEN),
        draw_prompts(overlay(image, predicted, ORANGE), record.get("prompts", [])),
    ]
    scale = PANEL_PX / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    canvas = Image.new("RGB", (size[0] * 3, size[1] + 36), "white")
    for index, panel in enumerate(panels):
        canvas.paste(panel.resize(size, Image.Resampling.BILINEAR), (index * size[0], 36))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), f"{sample.sample_id}  IoU {item.iou:.3f}  {record.get('status', '')}", fill="black")
    draw.text((4, 18), sample.question[:150], fill="black")
    return canvas


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * 0.45 + np.array(colour, dtype=np.float32) * 0.55
    return Image.fromarray(out.astype(np.uint8))


def draw_prompts(image: Image.Image, prompts: list) -> Image.Image:
    draw = ImageDraw.Draw(image)
    radius = max(2, round(max(image.size) / 150))
    for box, points in prompts:
        if box:
            draw.rectangle(box, outline=BLUE, width=max(1, radius // 2))
        for x, y in points or ():
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=GREEN, outline="white")
    return image

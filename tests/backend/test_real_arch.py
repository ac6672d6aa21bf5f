"""The real-size stand-ins that the GPU figures use: their processor sees what Qwen2.5-VL sees."""

from __future__ import annotations

import numpy as np
from PIL import Image

from think2seg.testing.real_arch import qwen25vl_processor
from think2seg.testing.tiny_lvlm import _processor as tiny_processor
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX


def test_the_real_processor_gives_900_image_tokens_per_view_even_after_a_tiny_one():
    """An 840x840 view is 30x30 merged patches (14 px patches, 2x2 merge); building the tiny model's
    processor (64 tokens a view) first must not change that (transformers 5.17 leaked its limits)."""
    view = Image.fromarray(np.zeros((VIEW_SIZE_PX, VIEW_SIZE_PX, 3), dtype=np.uint8))
    tiny = tiny_processor([])
    real = qwen25vl_processor()
    grid = real.image_processor(images=[view], return_tensors="np")["image_grid_thw"][0]
    assert int(np.prod(grid)) // 4 == 900
    tiny_grid = tiny.image_processor(images=[view], return_tensors="np")["image_grid_thw"][0]
    assert int(np.prod(tiny_grid)) // 4 == 64

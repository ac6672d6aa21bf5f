"""``think2seg train``: teach the prompter new targets with the paper's mask-only reward (GRPO).

Needs the ``train`` extra (TRL, PEFT): ``pip install 'think2seg[train]'``. The modules:
:mod:`~think2seg.train.labels`, :mod:`~think2seg.train.split` and :mod:`~think2seg.train.tiles`
(rasters and polygons into samples), :mod:`~think2seg.train.sources` (those, or a dataset), :mod:`~think2seg.train.reward`
(2 x IoU + valid JSON + format), :mod:`~think2seg.train.grpo` (TRL's trainer, LoRA, saving),
:mod:`~think2seg.train.progress`, :mod:`~think2seg.train.ranks`, :mod:`~think2seg.train.store`,
:mod:`~think2seg.train.report` and
:mod:`~think2seg.train.run` (the whole run).
"""

from __future__ import annotations

import importlib.util

from think2seg.errors import InputError

TRAIN_PACKAGES = ("trl", "peft", "datasets")


def require_train_extra() -> None:
    """Refuse, with what to install, when the ``train`` extra's packages are missing."""
    missing = [name for name in TRAIN_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"think2seg train needs {', '.join(missing)}, which are not installed: pip install 'think2seg[train]'"
        )

"""Batch sizes: parsing, ``auto`` from free GPU memory, halving on out-of-memory without losing or repeating."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from think2seg.errors import InputError
from think2seg.runs.microbatch import (
    AUTO,
    AUTO_CAP,
    MEMORY_HEADROOM,
    BatchSizer,
    auto_batch_size,
    check_batch_size,
    is_out_of_memory,
    parse_batch_size,
)

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"


class LimitedModel:
    """Answers ``item * 10`` for each item; runs out of memory with more than ``fits`` items at once."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[list[int]] = []
        self.done: list[int] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if len(items) > self.fits:
            raise torch.cuda.OutOfMemoryError(OOM)
        self.done += items
        return [item * 10 for item in items]


def test_parse_and_check_batch_size():
    assert parse_batch_size("auto") == AUTO and parse_batch_size(" AUTO ") == AUTO
    assert parse_batch_size("8") == 8
    for bad in ("0", "-2", "x", "2.5", "257"):
        with pytest.raises(argparse.ArgumentTypeError, match="auto or a whole number"):
            parse_batch_size(bad)
    assert check_batch_size(AUTO) == AUTO and check_batch_size(3) == 3
    for bad in (0, True, "3", 2.0, 1000):
        with pytest.raises(InputError, match="--batch-size"):
            check_batch_size(bad)


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError(OOM))
    assert is_out_of_memory(RuntimeError(OOM))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize(("items", "size", "fits"), [(13, 8, 3), (8, 8, 1), (5, 8, 4), (64, 64, 7)])
def test_an_oom_batch_is_split_and_every_item_runs_once_in_order(items, size, fits):
    model, sizer = LimitedModel(fits), BatchSizer(size, requested=size)
    results = []
    for start in range(0, items, size):
        batch = list(range(items))[start : start + size]
        results += sizer.run(batch, model)
    assert results == [item * 10 for item in range(items)]
    assert sorted(model.done) == list(range(items))  # none lost, none repeated
    assert 1 <= sizer.size <= fits and sizer.size >= fits // 2  # halved only as far as needed
    assert sizer.shrinks >= 1
    later = LimitedModel(fits)
    sizer.run(list(range(sizer.size)), later)
    assert len(later.calls) == 1  # the halved size sticks


def test_one_item_out_of_memory_and_other_errors_are_raised_unchanged():
    sizer = BatchSizer(4, requested=4)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        sizer.run([1], LimitedModel(0))

    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("index out of range")

    with pytest.raises(RuntimeError, match="index out of range"):
        sizer.run([1, 2, 3], broken)
    assert sizer.size == 4 and sizer.shrinks == 0


def _engine(per_sample: int, per_image: int, device: str = "cuda") -> SimpleNamespace:
    prompter = SimpleNamespace(device=torch.device(device), memory_per_sample=lambda: per_sample)
    return SimpleNamespace(prompter=prompter, segmenter=SimpleNamespace(memory_per_image=lambda: per_image))


def test_auto_batch_size_fits_the_free_memory():
    gib = 2**30
    engine = _engine(per_sample=200 * 2**20, per_image=56 * 2**20)  # 256 MiB a tile
    assert auto_batch_size(engine, free_bytes=5 * gib) == int(5 * 4 * MEMORY_HEADROOM)  # 16
    assert auto_batch_size(engine, free_bytes=200 * gib) == AUTO_CAP
    assert auto_batch_size(engine, free_bytes=200 * gib, cap=128) == 128
    assert auto_batch_size(engine, free_bytes=100 * 2**20) == 1  # too little for one: still 1
    assert auto_batch_size(_engine(0, 0), free_bytes=gib) == 1  # no estimate: no batching
    assert auto_batch_size(_engine(1, 1, device="cpu")) == 1  # a CPU does not batch
    assert BatchSizer.plan(AUTO, _engine(1, 1, device="cpu")).size == 1
    assert BatchSizer.plan(6, None).size == 6


def test_the_real_models_estimate_their_memory(tiny_engine):
    prompter, segmenter = tiny_engine.prompter, tiny_engine.segmenter
    short = prompter.memory_per_sample()
    prompter.max_new_tokens += 1000
    try:
        longer = prompter.memory_per_sample()
    finally:
        prompter.max_new_tokens -= 1000
    config = prompter.model.config.text_config
    head_dim = config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # float32 on CPU
    assert longer - short == 1000 * kv_per_token
    assert segmenter.memory_per_image() > 0
    assert auto_batch_size(tiny_engine) == 1  # CPU
    assert np.isfinite(short) and short > kv_per_token * 900

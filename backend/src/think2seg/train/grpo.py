"""GRPO on the mask-only reward with TRL's ``GRPOTrainer``: settings, dataset, policy, saving.

The prompt is the inference prompt exactly (system message, then the 840x840 view and the user
text): TRL builds ``[image, text]`` from the dataset's conversational ``prompt`` and its ``image``
column, which holds the view made by :func:`~think2seg.think2seg_rs.prompt.make_view` from the
sample's image. TRL's defaults differ from the paper (KL beta 0.0, loss ``dapo``); every setting
the paper fixes is set here explicitly (:class:`TrainSettings`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from think2seg.errors import InputError
from think2seg.eval.datasets import Sample
from think2seg.models.device import DevicePlan
from think2seg.think2seg_rs.prompt import SYSTEM_PROMPT, make_view, user_text
from think2seg.train.reward import sample_tile

log = logging.getLogger(__name__)

FULL_LEARNING_RATE = 1e-6
"""The paper's learning rate (a full fine-tune)."""
LORA_LEARNING_RATE = 1e-5
"""LoRA updates few weights from zero: a learning rate ten times the full fine-tune's."""
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA adapts the language model's attention and MLP projections; the vision tower stays frozen."""


@dataclass(frozen=True)
class TrainSettings:
    """The GRPO run's settings; the defaults are the paper's where it fixes them.

    A step is one optimizer update over ``prompts_per_step`` prompts x ``generations`` answers.
    ``max_steps`` 0 trains for ``epochs`` passes over the training samples.
    """

    max_steps: int = 0
    epochs: float = 1.0
    generations: int = 8
    prompts_per_step: int = 2
    max_completion_length: int = 1024
    learning_rate: float | None = None
    beta: float = 0.001
    epsilon: float = 0.2
    temperature: float = 1.0
    loss_type: str = "grpo"
    full: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = True
    save_steps: int = 50
    seed: int = 0
    warmup_steps: float = 0.0
    """Learning-rate warm-up: steps, or a fraction of the run when below 1."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More ``GRPOConfig`` fields, as given (for experiments; recorded in train.json)."""

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 0, "--max-steps must be 0 (use --epochs) or more"),
            (self.epochs > 0, "--epochs must be more than 0"),
            (self.generations >= 2, "--generations must be at least 2: GRPO compares answers within a group"),
            (self.prompts_per_step >= 1, "--prompts-per-step must be at least 1"),
            (self.max_completion_length >= 16, "--max-completion-length must be at least 16 tokens"),
            (self.learning_rate is None or self.learning_rate > 0, "--learning-rate must be more than 0"),
            (self.beta >= 0, "--beta must be 0 or more"),
            (self.epsilon > 0, "--epsilon must be more than 0"),
            (self.temperature > 0, "--temperature must be more than 0"),
            (self.lora_rank >= 1 and self.lora_alpha >= 1, "--lora-rank and --lora-alpha must be at least 1"),
            (self.save_steps >= 1, "--save-steps must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def lr(self) -> float:
        """The learning rate used: as given, else the paper's (full) or the LoRA default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return FULL_LEARNING_RATE if self.full else LORA_LEARNING_RATE

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "learning_rate": self.lr, "method": "full" if self.full else "lora"}


def training_prompt(question: str) -> list[dict[str, str]]:
    """The conversational prompt of a training sample; TRL puts the view before the user text."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_text(question)}]


def training_dataset(samples: Sequence[Sample]) -> Any:
    """A ``datasets.Dataset`` TRL trains on: ``prompt``, ``sample_id`` (for the reward) and an
    ``image`` column holding each sample's 840x840 view, made when a row is read."""
    from datasets import Dataset

    rows = [{"prompt": training_prompt(s.question), "sample_id": s.sample_id} for s in samples]
    by_id = {s.sample_id: s for s in samples}

    def with_views(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch["image"] = [make_view(sample_tile(by_id[i]).pixels) for i in batch["sample_id"]]
        return batch

    return Dataset.from_list(rows).with_transform(with_views)


def grpo_config(settings: TrainSettings, checkpoints: Path, plan: DevicePlan) -> Any:
    """TRL's ``GRPOConfig`` for ``settings``, checkpointing into ``checkpoints``."""
    from trl.trainer.grpo_config import GRPOConfig

    cuda = plan.device.type == "cuda"
    return GRPOConfig(
        output_dir=str(checkpoints),
        max_steps=settings.max_steps or -1,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.generations,
        gradient_accumulation_steps=settings.prompts_per_step,
        num_generations=settings.generations,
        max_completion_length=settings.max_completion_length,
        learning_rate=settings.lr,
        warmup_steps=settings.warmup_steps,
        beta=settings.beta,
        epsilon=settings.epsilon,
        temperature=settings.temperature,
        loss_type=settings.loss_type,
        gradient_checkpointing=settings.gradient_checkpointing,
        bf16=cuda,
        use_cpu=not cuda,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="steps",
        save_steps=settings.save_steps,
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **settings.extra,
    )


def lora_config(settings: TrainSettings) -> Any:
    """PEFT's LoRA configuration (None for a full fine-tune)."""
    if settings.full:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )


def load_policy(folder: Path, settings: TrainSettings, plan: DevicePlan) -> tuple[Any, Any]:
    """The model to train and its processor from a local checkpoint folder.

    LoRA keeps the frozen base in the device's dtype (bf16 on CUDA); a full fine-tune keeps float32
    master weights (bf16 autocast on CUDA), since updates of 1e-6 vanish in bf16 weights.
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    dtype = torch.float32 if settings.full else plan.dtype
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, dtype=dtype, attn_implementation=plan.attn_implementation, local_files_only=True
    )
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return model, processor


def save_model(trainer: Any, processor: Any, run_dir: Path, settings: TrainSettings) -> Path:
    """Write ``RUN/lvlm`` (a whole model ``--lvlm`` loads) and, for LoRA, ``RUN/adapter``.

    Each folder is written beside its place and renamed into it, so neither is ever half-written.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not settings.full:
        _replace_folder(run_dir / "adapter", lambda tmp: model.save_pretrained(tmp))
        model = model.merge_and_unload()
    target = run_dir / "lvlm"

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    _replace_folder(target, write)
    return target


def _replace_folder(target: Path, write: Any) -> None:
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)

"""``think2seg train``: fine-tune the prompter on your polygons (or a dataset) with GRPO."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from think2seg.cli.options import add_option, non_negative_int, positive_int
from think2seg.eval.datasets import DATASETS
from think2seg.models.registry import SEGMENTER_SYNTAX
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.options import TILE_SIZE_PX
from think2seg.train.tiles import BLOCK_TILES, EMPTY_RATIO, MIN_VALID_FRACTION, VAL_FRACTION

if TYPE_CHECKING:  # the train extra is imported only when the command runs
    from think2seg.train.grpo import TrainSettings
    from think2seg.train.sources import DatasetData, RasterData

EPILOG = """examples:
  think2seg train --raster scene.tif --labels dumps.gpkg --question "segment the illegal dumps" -o runs/dumps
  think2seg train --raster a.tif b.tif --labels lc.gpkg --class-field kind --classes classes.yaml -o runs/lc
  think2seg train --dataset earthreason --root /data/EarthReason -o runs/er --max-steps 500
then: think2seg segment RASTER "QUESTION" --lvlm RUN/lvlm -o out.gpkg"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="fine-tune the prompter on your polygons (GRPO, mask-only reward)",
        description="Teach the prompter your own targets: GRPO with the paper's reward (2 x IoU of SAM's mask + "
        "valid JSON + format), validated before and after. Writes RUN/lvlm, a model --lvlm loads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="RUN", help="the run's folder")
    _add_data(parser)
    _add_training(parser)
    models = parser.add_argument_group("models")
    models.add_argument(
        "--lvlm", default=DEFAULT_LVLM, metavar="ID|DIR", help=f"the model to start from (default {DEFAULT_LVLM})"
    )
    models.add_argument(
        "--segmenter", default=DEFAULT_SEGMENTER, metavar="SPEC", help=f"the frozen segmenter: {SEGMENTER_SYNTAX}"
    )
    models.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="compute device (default auto)")
    run = parser.add_argument_group("run")
    run.add_argument("--val-limit", type=positive_int, metavar="N", help="score only the first N validation samples")
    run.add_argument(
        "--examples", type=non_negative_int, default=4, metavar="N", help="example pictures in the report (default 4)"
    )
    run.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="discard the run in RUN and start again")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_command)


def _add_data(parser: argparse.ArgumentParser) -> None:
    own = parser.add_argument_group("your rasters and polygons")
    own.add_argument("--raster", type=Path, nargs="+", metavar="RASTER", help="one or more georeferenced rasters")
    own.add_argument("--labels", type=Path, metavar="FILE", help="the target polygons (GeoPackage, Shapefile, ...)")
    own.add_argument(
        "--question", action="append", default=[], metavar="TEXT", help="a question for the targets (repeatable)"
    )
    own.add_argument("--classes", type=Path, metavar="FILE", help="YAML/JSON: class value -> question(s)")
    own.add_argument("--class-field", metavar="FIELD", help="the labels' field holding each polygon's class")
    for option in (TILE_SIZE_PX, EMPTY_RATIO, VAL_FRACTION, BLOCK_TILES, MIN_VALID_FRACTION):
        add_option(own, option)
    data = parser.add_argument_group("or a dataset (as think2seg eval reads it)")
    data.add_argument("--dataset", choices=DATASETS, help="the dataset's layout")
    data.add_argument("--root", type=Path, metavar="DIR", help="the dataset's folder")
    data.add_argument("--val-root", type=Path, metavar="DIR", help="a separate validation dataset folder")
    data.add_argument("--train-split", default="train", help="default train")
    data.add_argument("--val-split", default="val", help="default val")
    data.add_argument("--limit", type=positive_int, metavar="N", help="only the first N samples of each split")


def _add_training(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (defaults: the paper's settings where it fixes them)")
    group.add_argument(
        "--max-steps", type=non_negative_int, default=0, metavar="N", help="optimizer steps (0: --epochs)"
    )
    group.add_argument("--epochs", type=float, default=1.0, help="passes over the training samples (default 1)")
    group.add_argument(
        "--generations", type=positive_int, default=8, metavar="G", help="answers per prompt (default 8; the paper 16)"
    )
    group.add_argument(
        "--prompts-per-step", type=positive_int, default=2, metavar="P", help="prompts per step (default 2)"
    )
    group.add_argument(
        "--max-completion-length", type=positive_int, default=1024, metavar="TOKENS", help="default 1024"
    )
    group.add_argument(
        "--learning-rate", type=float, metavar="LR", help="default 1e-5 (LoRA) or 1e-6 (--full, the paper's)"
    )
    group.add_argument("--beta", type=float, default=0.001, help="KL weight (default 0.001)")
    group.add_argument("--epsilon", type=float, default=0.2, help="clip range (default 0.2)")
    group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    group.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    group.add_argument("--lora-rank", type=positive_int, default=16, metavar="R", help="default 16")
    group.add_argument("--lora-alpha", type=positive_int, default=32, help="default 32")
    group.add_argument(
        "--save-steps", type=positive_int, default=50, metavar="N", help="checkpoint every N steps (default 50)"
    )
    group.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, more memory")
    group.add_argument("--seed", type=int, default=0, help="default 0")


def run_command(args: argparse.Namespace) -> int:
    """Translate the options into a TrainRequest and run it."""
    from think2seg.train import require_train_extra

    require_train_extra()
    from think2seg.train.run import TrainingInterrupted, TrainRequest, train

    request = TrainRequest(
        run_dir=args.output,
        source=_source(args),
        settings=_settings(args),
        lvlm=args.lvlm,
        segmenter=args.segmenter,
        device=args.device,
        val_limit=args.val_limit,
        examples=args.examples,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    try:
        result = train(request)
    except TrainingInterrupted as exc:
        print(f"think2seg: {exc}", file=sys.stderr)
        return 130
    if not result.record:
        return 0  # another process of a multi-process run: the main one reports
    print(f"trained model: {result.lvlm_dir}\nreport: {result.report}")
    for name in ("before", "after"):
        scores = result.record.get(name)
        if scores:
            m = scores["metrics"]
            print(
                f"validation {name}: gIoU {100 * m['giou']:.2f}  cIoU {100 * m['ciou']:.2f}  ({m['samples']} samples)"
            )
    return 0


def _source(args: argparse.Namespace) -> RasterData | DatasetData:
    from think2seg.errors import InputError
    from think2seg.train.sources import DatasetData, RasterData
    from think2seg.train.tiles import DataOptions

    own = args.raster or args.labels
    if bool(own) == bool(args.dataset):
        raise InputError("give either --raster ... --labels FILE, or --dataset NAME --root DIR")
    if args.dataset:
        if args.root is None:
            raise InputError(f"--dataset {args.dataset} needs --root DIR")
        return DatasetData(
            args.dataset,
            args.root,
            args.train_split,
            args.val_split,
            args.val_root,
            args.val_fraction,
            args.limit,
            args.seed,
        )
    if not args.raster or args.labels is None:
        raise InputError("give both --raster RASTER... and --labels FILE")
    options = DataOptions(
        tile_size_px=args.tile_size_px,
        empty_ratio=args.empty_ratio,
        val_fraction=args.val_fraction,
        block_tiles=args.block_tiles,
        min_valid_fraction=args.min_valid_fraction,
        seed=args.seed,
    )
    return RasterData(tuple(args.raster), args.labels, tuple(args.question), args.classes, args.class_field, options)


def _settings(args: argparse.Namespace) -> TrainSettings:
    from think2seg.train.grpo import TrainSettings

    return TrainSettings(
        max_steps=args.max_steps,
        epochs=args.epochs,
        generations=args.generations,
        prompts_per_step=args.prompts_per_step,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        beta=args.beta,
        epsilon=args.epsilon,
        temperature=args.temperature,
        full=args.full,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        save_steps=args.save_steps,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        seed=args.seed,
    )

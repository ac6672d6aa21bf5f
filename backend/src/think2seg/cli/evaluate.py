"""``think2seg eval``: reproduce the paper's metrics, or measure models on your own data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from think2seg.cli.options import (
    add_batch_size,
    add_model_options,
    model_spec,
    non_negative_int,
    positive_int,
)
from think2seg.eval.datasets import DATASETS, load_samples
from think2seg.eval.predict import PROTOCOLS, EnginePredictor
from think2seg.eval.report import markdown
from think2seg.eval.runner import EvalParams, cache_folder, check_outputs, evaluate
from think2seg.runs.policy import Continuation


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="score a model on a benchmark or your own data",
        description="Predict every sample of a dataset, then report gIoU, cIoU, Precision@0.5-0.9 and more.",
    )
    parser.add_argument("--dataset", choices=DATASETS, required=True, help="the dataset's layout (see the README)")
    parser.add_argument("--root", type=Path, required=True, help="the dataset's folder")
    parser.add_argument("--split", default="test", help="test, val (default test)")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="paper",
        help="paper: 840x840 as published (default); native: the product's path",
    )
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N samples")
    parser.add_argument("--seed", type=int, default=0, help="draws EarthReason's question per image (default 0)")
    add_batch_size(
        parser,
        help="samples per model batch; auto (default) fills the free GPU memory (1 on a CPU)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run cached beside REPORT")
    parser.add_argument(
        "--retry-failed", action="store_true", help="continue it and redo the samples that failed (an error)"
    )
    parser.add_argument("--overwrite", action="store_true", help="discard an earlier run and report")
    parser.add_argument(
        "--visualize", type=non_negative_int, default=0, metavar="N", help="PNGs of the N worst samples beside REPORT"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the dataset and the outputs, then load the models and evaluate."""
    samples = load_samples(args.dataset, args.root, args.split, seed=args.seed, limit=args.limit)
    check_outputs(args.output, Continuation(args.resume, args.retry_failed, args.overwrite))
    predictor = EnginePredictor(model_spec(args).load(), args.protocol)
    params = EvalParams(
        args.dataset, str(args.root.resolve()), args.split, args.protocol, args.seed, args.limit, predictor.name
    )
    try:
        report = evaluate(
            samples,
            predictor,
            args.output,
            params,
            batch_size=args.batch_size,
            resume=args.resume,
            retry_failed=args.retry_failed,
            overwrite=args.overwrite,
            visualize=args.visualize,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        return _interrupted(args.output)
    print(markdown(report))
    print(f"\nreport: {args.output.resolve()}")
    return 0


def _interrupted(output: Path) -> int:
    """Ctrl-C during the run: say that the cache is kept and how to continue (exit status 130)."""
    cache = cache_folder(output)
    if not cache.is_dir():
        raise KeyboardInterrupt
    print(
        f"think2seg: interrupted; the predictions so far are kept in {cache}: "
        "run the same command with --resume to continue",
        file=sys.stderr,
    )
    return 130

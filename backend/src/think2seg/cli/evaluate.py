"""``think2seg eval``: reproduce the paper's metrics, or measure models on your own data."""

from __future__ import annotations

import argparse
from pathlib import Path

from think2seg.batching import AUTO, parse_batch_size
from think2seg.cli.options import add_model_options, model_spec, positive_int
from think2seg.eval.datasets import DATASETS, load_samples
from think2seg.eval.predict import PROTOCOLS, EnginePredictor
from think2seg.eval.report import markdown
from think2seg.eval.runner import EvalParams, evaluate


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
    parser.add_argument(
        "--batch-size",
        type=parse_batch_size,
        default=AUTO,
        metavar="N|auto",
        help="samples per model batch; auto (default) fills the free GPU memory (1 on a CPU)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run cached beside REPORT")
    parser.add_argument("--overwrite", action="store_true", help="discard an earlier run and report")
    parser.add_argument(
        "--visualize", type=int, default=0, metavar="N", help="PNGs of the N worst samples beside REPORT"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    samples = load_samples(args.dataset, args.root, args.split, seed=args.seed)[: args.limit]
    engine = model_spec(args).load()
    predictor = EnginePredictor(engine, args.protocol)
    params = EvalParams(
        args.dataset, str(args.root.resolve()), args.split, args.protocol, args.seed, args.limit, predictor.name
    )
    report = evaluate(
        samples,
        predictor,
        args.output,
        params,
        batch_size=args.batch_size,
        resume=args.resume,
        overwrite=args.overwrite,
        visualize=args.visualize,
        progress=not args.quiet,
    )
    print(markdown(report))
    print(f"\nreport: {args.output.resolve()}")
    return 0

"""Every GPU figure of the project in one prepared run, each part in its own process and time cap.

    scripts/gpu_check.sh results/gpu                             # on a GPU machine (installs the carried wheels)
    .venv/bin/python scripts/gpu_check.py --dry-run results/gpu-dry   # here: every part, tiny models, CPU

Parts, in this order (the most wanted figures first, so a short budget loses the least):

  throughput  bench/gpu_throughput.py: reference-b1, plain generate at batch 20, the optimized path
  stages      bench/segment_stages.py --arch real: one question -> polygons on a 1024x1024 window
  batch       think2seg batch over a generated 8192x8192 raster, --batch-size auto (bench/batch_throughput.py --cli)
  compile     bench/gpu_throughput.py --paths compiled: the optimized path with --compile
  pytest      pytest -m gpu on the test files that have GPU tests

A part that fails or outruns its cap (its whole process group is killed) does not stop the others;
parts left when --budget-s is spent are skipped. Writes OUT_DIR/gpu_check.json (each part's status,
seconds, figures and the end of its output), OUT_DIR/gpu_check.md (the tables and the issue's
targets) and OUT_DIR/gpu_check.log (every part's output). --dry-run runs every part on the CPU with
the tiny architectures and small sizes: it shows the script works, its figures say nothing of a GPU.

Needs only the standard library: it never imports torch (a CUDA context here would hold GPU memory
while the parts run).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gpu_check_report as report

ROOT = Path(__file__).resolve().parents[1]
MIN_PART_S = 15.0
"""A part is skipped rather than started with less than this left of the budget."""
KILL_GRACE_S = 10.0


@dataclasses.dataclass(frozen=True)
class Part:
    """One measurement: ``argv`` runs after the Python executable; ``{out}`` is its result file."""

    name: str
    argv: tuple[str, ...]
    cap_s: float
    result: str = "json"  # the result file's extension: json, or xml (pytest's JUnit report)


@dataclasses.dataclass
class PartRun:
    name: str
    status: str  # ok, failed, timed_out, skipped
    seconds: float
    cap_s: float
    returncode: int | None = None
    reason: str = ""
    figures: dict = dataclasses.field(default_factory=dict)
    output_tail: str = ""


def gpu_test_files() -> list[str]:
    """The backend test files that hold a test marked ``gpu``."""
    tests = sorted((ROOT / "tests" / "backend").glob("test_*.py"))
    return [str(path.relative_to(ROOT)) for path in tests if "pytest.mark.gpu" in path.read_text()]


def parts(*, dry_run: bool) -> list[Part]:
    """The parts: real-size architectures on CUDA, or (dry run) the tiny ones on the CPU."""
    pytest = ("-m", "pytest", "-m", "gpu", *gpu_test_files(), "-q", "-rs", "--junitxml={out}")
    if dry_run:
        small = ("--device", "cpu", "--batch-size", "2", "--reference-tiles", "1", "--reference-batch", "2")
        small += ("--batches", "1", "--new-tokens", "8", "--tile-size", "256")
        return [
            Part("throughput", ("bench/gpu_throughput.py", *small, "--json", "{out}"), 120),
            Part("stages", ("bench/segment_stages.py", "--device", "cpu", "--arch", "tiny", "--repeats", "1")
                 + ("--new-tokens", "16", "--json", "{out}"), 90),
            Part("batch", ("bench/batch_throughput.py", "--cli", "--device", "cpu", "--arch", "tiny")
                 + ("--size", "1536", "--new-tokens", "16", "--json", "{out}"), 90),
            Part("compile", ("bench/gpu_throughput.py", *small, "--paths", "compiled", "--json", "{out}"), 90),
            Part("pytest", pytest, 90, result="xml"),
        ]  # fmt: skip
    return [
        Part("throughput", ("bench/gpu_throughput.py", "--device", "cuda", "--reference-tiles", "4")
             + ("--batches", "1", "--json", "{out}"), 180),
        Part("stages", ("bench/segment_stages.py", "--device", "cuda", "--arch", "real", "--repeats", "3")
             + ("--json", "{out}"), 75),
        Part("batch", ("bench/batch_throughput.py", "--cli", "--device", "cuda", "--arch", "real", "--size", "8192")
             + ("--batch-size", "auto", "--new-tokens", "128", "--json", "{out}"), 150),
        Part("compile", ("bench/gpu_throughput.py", "--device", "cuda", "--batches", "1", "--paths", "compiled")
             + ("--json", "{out}"), 180),
        Part("pytest", pytest, 240, result="xml"),  # last: it gets what is left; its tiny LVLM trains on the CPU
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    """The parts' environment: the backend and the benchmarks importable, output unbuffered, no Hub."""
    env = dict(os.environ)
    paths = [str(ROOT / "backend" / "src"), str(ROOT / "bench"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env |= {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_part(part: Part, work: Path, *, cap_s: float, python: str = sys.executable) -> PartRun:
    """Runs ``part`` in a process group of its own, killed whole if it outruns ``cap_s``."""
    out = work / f"{part.name}.{part.result}"
    out.unlink(missing_ok=True)
    log_path = work / f"{part.name}.log"
    argv = [python, *(arg.replace("{out}", str(out)) for arg in part.argv)]
    start = time.perf_counter()
    with log_path.open("w") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        process = subprocess.Popen(
            argv, cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode: int | None = process.wait(timeout=cap_s)
            status = "ok" if returncode == 0 else "failed"
            reason = "" if returncode == 0 else f"exit status {returncode}"
        except subprocess.TimeoutExpired:
            stop_group(process)
            returncode, status, reason = None, "timed_out", f"over its cap of {cap_s:.0f} s: stopped"
    seconds = time.perf_counter() - start
    figures = report.read_result(out)
    if status == "ok" and not figures:
        status, reason = "failed", f"exit status 0 but no result in {out.name}"
    tail = log_path.read_text(errors="replace")[-4000:]
    return PartRun(part.name, status, seconds, cap_s, returncode, reason, figures, tail)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the part's whole process group (compile workers too), then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_parts(
    chosen: Sequence[Part], work: Path, *, budget_s: float, on_done: Callable[[PartRun], None] = lambda run: None
) -> list[PartRun]:
    """Each part in turn under ``min(its cap, what is left of budget_s)``; none stops the others. A part
    is skipped when less than :data:`MIN_PART_S` of the budget is left."""
    start, runs = time.perf_counter(), []
    for part in chosen:
        left = budget_s - (time.perf_counter() - start) - KILL_GRACE_S  # a stopped part may take the grace too
        cap_s = min(part.cap_s, left)
        if left < MIN_PART_S:
            run = PartRun(part.name, "skipped", 0.0, part.cap_s, reason=f"only {max(left, 0):.0f} s of the budget left")
        else:
            print(f"gpu_check: {part.name} (cap {cap_s:.0f} s) ...", flush=True)
            run = run_part(part, work, cap_s=cap_s)
        print(f"gpu_check: {part.name} {run.status} in {run.seconds:.0f} s {run.reason}".rstrip(), flush=True)
        runs.append(run)
        on_done(run)
    return runs


def machine(dry_run: bool) -> dict:
    """Where this ran: GPU (nvidia-smi), Python and library versions, without importing them."""
    import importlib.metadata as metadata
    import platform

    info: dict = {
        "mode": "dry-run (CPU, tiny architectures)" if dry_run else "gpu",
        "python": platform.python_version(),
    }
    info["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for name in ("torch", "transformers", "rasterio", "pyogrio", "shapely"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
        info["gpu"] = done.stdout.strip() or done.stderr.strip()
    else:
        info["gpu"] = None
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="where gpu_check.json, gpu_check.md and gpu_check.log go")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU with the tiny architectures")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for all parts (default 420)")
    parser.add_argument("--only", help="comma-separated parts to run (default all), e.g. compile,pytest")
    parser.add_argument(
        "--cap", action="append", default=[], metavar="PART=S", help="another time cap for a part, in seconds"
    )
    return parser.parse_args(argv)


def chosen_parts(args: argparse.Namespace) -> list[Part]:
    every = parts(dry_run=args.dry_run)
    names = [p.name for p in every]
    wanted = [n.strip() for n in args.only.split(",")] if args.only else names
    caps = dict(_cap(text, names) for text in args.cap)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"gpu_check: no part {', '.join(unknown)}; the parts are {', '.join(names)}")
    return [dataclasses.replace(p, cap_s=caps.get(p.name, p.cap_s)) for p in every if p.name in wanted]


def _cap(text: str, names: list[str]) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if name not in names or value <= 0:
        raise SystemExit(f"gpu_check: --cap takes PART=SECONDS with PART one of {', '.join(names)}, not {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = chosen_parts(args)
    if not args.dry_run and not shutil.which("nvidia-smi"):
        raise SystemExit("gpu_check: no NVIDIA GPU here (no nvidia-smi): on a CPU run it with --dry-run")
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    info = machine(args.dry_run)
    print(f"gpu_check: {info['mode']}; GPU {info['gpu']}; torch {info['torch']}; budget {args.budget_s:.0f} s")
    (out_dir / "gpu_check.log").write_text("")
    runs: list[PartRun] = []

    def done(run: PartRun) -> None:
        """Outputs rewritten after every part: a run stopped from outside keeps what was measured."""
        runs.append(run)
        path = work / f"{run.name}.log"
        with (out_dir / "gpu_check.log").open("a") as log:
            log.write(f"===== {run.name}: {run.status} {run.reason} =====\n")
            log.write(path.read_text(errors="replace") if path.exists() else "(not run)\n")
        try:
            report.write_outputs(out_dir, info, [dataclasses.asdict(r) for r in runs], [p.name for p in chosen])
        except Exception as exc:  # noqa: BLE001 (said, and the parts left still run: the log keeps their output)
            print(f"gpu_check: could not write the outputs after {run.name}: {exc!r}", flush=True)

    try:
        run_parts(chosen, work, budget_s=args.budget_s, on_done=done)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    not_ok = [f"{r.name} {r.status} ({r.reason})" for r in runs if r.status != "ok"]
    print("gpu_check: " + ("every part ok" if not not_ok else "not ok: " + "; ".join(not_ok)))
    print(f"gpu_check: wrote {out_dir / 'gpu_check.md'}, gpu_check.json and gpu_check.log")
    print((out_dir / "gpu_check.md").read_text())
    return 0 if not not_ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What scripts/gpu_check.py writes: gpu_check.json and gpu_check.md from the parts' own results.

Each part leaves one result file (the benchmarks' --json, pytest's JUnit XML); this module reads
them, picks each part's key figures, and sets the measured ratios against the issue's targets.
Standard library only.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path

TARGETS = (
    # (path, baseline, at least this many times its tiles/s)
    ("optimized", "reference-b1", 10.0),
    ("optimized", "plain", 2.0),
    ("optimized+compile", "reference-b1", 10.0),
    ("optimized+compile", "plain", 2.0),
)
REAL_IMAGE_TOKENS = 900
"""Image tokens of an 840x840 view with Qwen2.5-VL's processor (fewer: the benchmark under-counts the vision cost)."""
INTERACTIVE_TARGET_S = 1.5
"""Question -> polygons on a 1024x1024 window, seconds."""
UNREADABLE = "result without its figures"
"""How a part whose result lacks figures is described; its result is left out of targets and tables."""
STAGE_COLUMNS = ("prepare", "lvlm_prefill", "lvlm_decode", "parse", "sam_encode", "sam_decode")


def read_result(path: Path) -> dict:
    """A part's result file as a dict; {} when it is missing or unreadable (a part stopped early)."""
    if not path.is_file():
        return {}
    try:
        if path.suffix == ".xml":
            return _junit(path)
        value = json.loads(path.read_text())
    except (ValueError, ElementTree.ParseError):
        return {}
    return value if isinstance(value, dict) else {}


def _junit(path: Path) -> dict:
    """Counts and the failed and skipped tests of a pytest JUnit report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    failed, skipped = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        for skip in case.iter("skipped"):
            skipped.append(f"{name} ({skip.get('message', '')})")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts | {"passed": passed, "failed_tests": failed, "skipped_tests": skipped}


# --- key figures -------------------------------------------------------------------------------------


def throughput_paths(parts: dict[str, dict]) -> list[dict]:
    """The timed paths of the throughput and compile parts (finished ones, in run order)."""
    return [
        path for name in ("throughput", "compile") for path in parts.get(name, {}).get("figures", {}).get("paths", [])
    ]


def _gib(value: float | None) -> str:
    return f"{value:.1f} GiB" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _share(value: float | None) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "-"


def key_figures(name: str, raw: dict) -> str:
    """One line of the figures that matter for part ``name``."""
    if not raw:
        return "-"
    if name in ("throughput", "compile"):
        cells = [
            f"{p['name']} {p['tiles_per_s']:.3g} tiles/s ({p['tiles']} at batch {p['batch']}, peak {_gib(p['peak_gib'])}, "
            f"decode {p['decode_step_ms']:.1f} ms/step = {_share(p['roofline_fraction'])} of roofline)"
            for p in raw.get("paths", [])
        ]
        if raw.get("running"):
            cells.append(f"stopped during {raw['running']}")
        tokens = f"; {raw['prompt_tokens']} prompt tokens ({raw.get('image_tokens', '?')} of the image)"
        return "; ".join(cells) + tokens + f"; copy bandwidth {raw.get('bandwidth_gbs', 0):.0f} GB/s"
    if name == "stages":
        seconds = raw["seconds"]
        stages = ", ".join(f"{stage} {1000 * s:.0f}" for stage, s in seconds.items() if s > 0)
        return (
            f"{raw['window_px']}² window: {raw['total_s']:.2f} s question -> polygons (ms: {stages}); "
            f"decode {raw['decode_tokens_per_s']:.0f} tokens/s; peak {_gib(raw.get('peak_gib'))}"
        )
    if name == "batch":
        statuses = ", ".join(f"{k} {v}" for k, v in raw.get("statuses", {}).items())
        return (
            f"{raw['tiles']} tiles of a {raw['raster_px']}² raster: {raw['tiles_per_s']:.3g} tiles/s "
            f"(wall {raw['wall_s']:.1f} s less loading {raw['load_s']:.1f} s); batch size chosen "
            f"{raw['batch_size']}; peak {_gib(raw.get('peak_gpu_gib'))}; tiles {statuses}"
        )
    if name == "pytest":
        text = f"{raw['passed']} passed, {raw['failures'] + raw['errors']} failed, {raw['skipped']} skipped"
        return text + "".join(f"; FAILED {t}" for t in raw["failed_tests"])
    return json.dumps(raw)[:200]


def targets(parts: dict[str, dict], *, dry_run: bool) -> list[dict]:
    """The issue's targets with what was measured; ``met`` is None when not measured (or in a dry run)."""
    paths = {p["name"]: p for p in throughput_paths(parts)}
    plain = next((n for n in paths if n.startswith("reference-b") and n != "reference-b1"), None)
    rows = []
    for name, base, times in TARGETS:
        base_name = plain if base == "plain" else base
        label = f"{name} >= {times:g}x the tiles/s of {base_name or 'plain generate at batch 20'}"
        if name in paths and base_name in paths:
            ratio = paths[name]["tiles_per_s"] / paths[base_name]["tiles_per_s"]
            rows.append({"target": label, "measured": f"{ratio:.2f}x", "met": None if dry_run else ratio >= times})
        else:
            rows.append({"target": label, "measured": "not measured", "met": None})
    throughput = parts.get("throughput", {}).get("figures", {})
    label = f"check: the real architecture sees {REAL_IMAGE_TOKENS} image tokens per 840² view"
    if throughput.get("arch") == "real" and "image_tokens" in throughput:
        tokens = throughput["image_tokens"]
        rows.append({"target": label, "measured": str(tokens), "met": tokens == REAL_IMAGE_TOKENS})
    elif not dry_run:
        rows.append({"target": label, "measured": "not measured", "met": None})
    stages = parts.get("stages", {}).get("figures", {})
    label = f"interactive question -> polygons < {INTERACTIVE_TARGET_S} s on a 1024² window"
    if stages:
        total = stages["total_s"]
        met = None if dry_run or stages["window_px"] != 1024 else total < INTERACTIVE_TARGET_S
        rows.append({"target": label, "measured": f"{total:.2f} s ({stages['window_px']}² window)", "met": met})
    else:
        rows.append({"target": label, "measured": "not measured", "met": None})
    return rows


# --- outputs -----------------------------------------------------------------------------------------


def write_outputs(out_dir: Path, machine: dict, runs: list[dict], planned: list[str]) -> None:
    """gpu_check.json and gpu_check.md for the parts run so far (``planned`` names every part)."""
    dry_run = machine["mode"] != "gpu"
    described = [run | {"key_figures": _key_figures(run)} for run in runs]
    usable = {run["name"]: run for run in described if not run["key_figures"].startswith(UNREADABLE)}
    done = [run["name"] for run in runs]
    record = {
        "machine": machine,
        "parts": described,
        "not_run_yet": [name for name in planned if name not in done],
        "targets": targets(usable, dry_run=dry_run),
    }
    (out_dir / "gpu_check.json").write_text(json.dumps(record, indent=1))
    (out_dir / "gpu_check.md").write_text(markdown(record, dry_run=dry_run))


def _key_figures(run: dict) -> str:
    """The key figures, or what is wrong with a result that lacks them (the outputs are still written)."""
    try:
        return key_figures(run["name"], run["figures"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        return f"{UNREADABLE} ({type(exc).__name__}: {exc}): see gpu_check.json"


def markdown(record: dict, *, dry_run: bool) -> str:
    machine = record["machine"]
    lines = [f"# GPU check: {machine['mode']}", ""]
    lines.append(
        f"GPU {machine['gpu'] or 'none'}; {machine['date_utc']}; Python {machine['python']}, torch "
        f"{machine['torch']}, transformers {machine['transformers']}."
    )
    if dry_run:
        lines += [
            "",
            "DRY RUN: tiny architectures on the CPU. It shows the script works; its figures say nothing of a GPU.",
        ]
    lines += ["", "| part | status | seconds | key figures |", "|---|---|---|---|"]
    for part in record["parts"]:
        status = part["status"] + (f" ({part['reason']})" if part["reason"] else "")
        lines.append(f"| {part['name']} | {status} | {part['seconds']:.0f} | {part['key_figures']} |")
    for name in record["not_run_yet"]:
        lines.append(f"| {name} | not run yet | - | - |")
    lines += ["", "| target (issue 16) | measured | met |", "|---|---|---|"]
    for row in record["targets"]:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    parts = {part["name"]: part for part in record["parts"] if not part["key_figures"].startswith(UNREADABLE)}
    lines += throughput_table(parts) + stages_table(parts.get("stages", {}).get("figures", {}))
    return "\n".join(lines) + "\n"


def throughput_table(parts: dict[str, dict]) -> list[str]:
    paths = throughput_paths(parts)
    if not paths:
        return []
    base = next((p for p in paths if p["name"] == "reference-b1"), None)
    stage_heads = " | ".join(f"{s} ms" for s in STAGE_COLUMNS)
    lines = ["", "Paths of bench/gpu_throughput.py (ms per tile per stage):", ""]
    lines.append(f"| path | batch | tiles | tiles/s | vs b1 | {stage_heads} | peak | decode ms/step | of roofline |")
    lines.append("|" + "---|" * (8 + len(STAGE_COLUMNS)))
    for p in paths:
        ratio = f"{p['tiles_per_s'] / base['tiles_per_s']:.2f}x" if base else "-"
        stages = " | ".join(f"{p.get('ms_per_tile', {}).get(s, 0.0):.1f}" for s in STAGE_COLUMNS)
        lines.append(
            f"| {p['name']} | {p['batch']} | {p['tiles']} | {p['tiles_per_s']:.3g} | {ratio} | {stages} | "
            f"{_gib(p['peak_gib'])} | {p['decode_step_ms']:.2f} | {_share(p['roofline_fraction'])} |"
        )
    return lines


def stages_table(raw: dict) -> list[str]:
    if not raw:
        return []
    lines = ["", f"One {raw['window_px']}² window, bench/segment_stages.py (mean of {raw.get('repeats', '?')}):", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.3f} |" for stage, seconds in raw["seconds"].items()]
    return lines + [f"| total | {raw['total_s']:.3f} |"]

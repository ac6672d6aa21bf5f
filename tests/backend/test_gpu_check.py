"""scripts/gpu_check.py: every part runs and reports (dry run on the CPU), and a part over its cap
is stopped and reported while the others still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
PARTS = ["throughput", "stages", "batch", "compile", "pytest"]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import gpu_check

    yield gpu_check
    for name in ("gpu_check", "gpu_check_report"):
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_dry_run_reports_every_part_with_its_figures(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_check.sh"), str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHON": sys.executable},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = {part["name"]: part for part in record["parts"]}
    assert list(parts) == PARTS and record["not_run_yet"] == []
    for part in parts.values():
        assert part["status"] == "ok" and part["seconds"] > 0 and part["figures"], part["name"]
        assert part["key_figures"] not in ("-", "") and "without its figures" not in part["key_figures"]
    names = [path["name"] for path in parts["throughput"]["figures"]["paths"]]
    assert names == ["reference-b1", "reference-b2", "optimized"]
    assert [path["name"] for path in parts["compile"]["figures"]["paths"]] == ["optimized+compile"]
    for path in parts["throughput"]["figures"]["paths"] + parts["compile"]["figures"]["paths"]:
        assert path["tiles_per_s"] > 0 and path["roofline_fraction"] > 0 and path["ms_per_tile"]["lvlm_decode"] > 0
    assert parts["stages"]["figures"]["window_px"] == 1024 and parts["stages"]["figures"]["total_s"] > 0
    batch = parts["batch"]["figures"]
    assert batch["tiles"] == 4 and batch["batch_size"] == 1 and batch["tiles_per_s"] > 0
    assert sum(batch["statuses"].values()) == 4  # random weights: every tile is unparseable
    assert parts["pytest"]["figures"]["skipped"] >= 2 and parts["pytest"]["figures"]["failures"] == 0  # no CUDA
    assert [row["met"] for row in record["targets"]] == [None] * 5  # a dry run meets or misses nothing
    assert all(row["measured"] != "not measured" for row in record["targets"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in table and "optimized+compile >= 10x" in table and "interactive" in table
    for name in PARTS:
        assert f"| {name} | ok |" in table
    assert "| optimized+compile | 2 | 2 |" in table and "| total |" in table
    log = (tmp_path / "gpu_check.log").read_text()
    assert all(f"===== {name}: ok" in log for name in PARTS)
    assert "every part ok" in done.stdout


def test_a_part_over_its_cap_is_stopped_and_the_others_still_run(gpu_check, tmp_path):
    sleeper = tmp_path / "sleeper.py"  # starts a grandchild: the whole process group must go
    sleeper.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    pid_file = tmp_path / "grandchild.pid"
    writer = "import json, sys; json.dump({'answer': 42}, open(sys.argv[1], 'w'))"
    parts = [
        gpu_check.Part("slow", (str(sleeper), str(pid_file)), cap_s=2.0),
        gpu_check.Part("fails", ("-c", "raise SystemExit(3)"), cap_s=30.0),
        gpu_check.Part("fine", ("-c", writer, "{out}"), cap_s=30.0),
        gpu_check.Part("late", ("-c", writer, "{out}"), cap_s=30.0),
    ]
    start = time.perf_counter()
    runs = gpu_check.run_parts(parts[:3], tmp_path, budget_s=300)
    assert time.perf_counter() - start < 30
    assert [(r.name, r.status) for r in runs] == [("slow", "timed_out"), ("fails", "failed"), ("fine", "ok")]
    assert runs[0].seconds < 15 and "cap of 2 s" in runs[0].reason and runs[0].returncode is None
    assert runs[1].returncode == 3 and runs[2].figures == {"answer": 42}
    grandchild = int(pid_file.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
    skipped = gpu_check.run_parts(parts[3:], tmp_path, budget_s=gpu_check.MIN_PART_S - 1)
    assert skipped[0].status == "skipped" and "budget" in skipped[0].reason


def test_outputs_say_what_timed_out_and_what_never_ran(gpu_check, tmp_path):
    """A throughput part stopped during its third path keeps its first two in the tables and targets."""
    report = sys.modules["gpu_check_report"]
    path = {"batch": 1, "tiles": 4, "wall_s": 8.0, "ms_per_tile": {"lvlm_decode": 900.0}, "peak_gib": 7.5}
    path |= {"decode_step_ms": 25.0, "roofline_step_ms": 2.0, "roofline_fraction": 0.08}
    paths = [path | {"name": "reference-b1", "tiles_per_s": 0.5}, path | {"name": "reference-b20", "tiles_per_s": 3.0}]
    figures = {"bandwidth_gbs": 4000.0, "running": "optimized", "paths": paths}
    figures |= {"arch": "real", "prompt_tokens": 911, "image_tokens": 64}  # a processor that lost its limits
    run = gpu_check.PartRun("throughput", "timed_out", 180.0, 180.0, None, "over its cap of 180 s: stopped", figures)
    info = {
        "mode": "gpu",
        "gpu": "NVIDIA H200",
        "date_utc": "-",
        "python": "3.12",
        "torch": "2.11",
        "transformers": "5",
    }
    report.write_outputs(tmp_path, info, [vars(run)], PARTS)
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["not_run_yet"] == PARTS[1:]
    assert "stopped during optimized" in record["parts"][0]["key_figures"]
    check = next(row for row in record["targets"] if row["target"].startswith("check:"))
    assert check["measured"] == "64" and check["met"] is False
    assert {row["measured"] for row in record["targets"] if row is not check} == {"not measured"}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| throughput | timed_out (over its cap of 180 s: stopped) | 180 |" in table
    assert "| stages | not run yet |" in table and "| reference-b20 | 1 | 4 | 3 | 6.00x |" in table
    broken = gpu_check.PartRun("stages", "ok", 1.0, 60.0, 0, "", {"total_s": 1.0})
    report.write_outputs(tmp_path, info, [vars(broken)], ["stages"])
    assert "without its figures" in (tmp_path / "gpu_check.md").read_text()

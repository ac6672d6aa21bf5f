"""The GPU benchmark stays runnable: a CPU smoke run with the tiny architectures."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_gpu_throughput_runs_every_path_on_the_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_throughput

    args = ["--device", "cpu", "--batch-size", "3", "--reference-tiles", "2", "--reference-batch", "2", "--compile"]
    results = gpu_throughput.main(args)
    assert [r.name for r in results] == ["reference-b1", "reference-b2", "optimized", "optimized+compile"]
    assert [r.tiles for r in results] == [2, 2, 6, 6] and [r.batch for r in results] == [1, 2, 3, 3]
    for result in results:
        assert result.tiles_per_s > 0 and result.decode_step_ms > 0
        assert {"lvlm_prefill", "lvlm_decode", "sam_encode", "sam_decode"} <= set(result.timer.seconds)
    out = capsys.readouterr().out
    assert "| optimized+compile | 3 | 6 |" in out and "memory bandwidth" in out and "of roofline" in out
    sys.modules.pop("gpu_throughput", None)

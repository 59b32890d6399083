"""benchmarks/gpu_bench.py runs only on a lent GPU; --smoke runs the same code paths at toy shapes on CPU so the
script is known to work before GPU time is spent on it (its numbers mean nothing on CPU)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bench.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("extract_first_block_sps", "extract_first_block_attention_sps", "extract_full_forward_sps",
                "prism_smoke_s", "scalselect_smoke_s", "lora_step_s", "lora_samples_per_s", "lora_model_tflops"):
        assert math.isfinite(res[key]) and res[key] > 0, key
    assert res["lora_mfu"] is None  # no peak to compare against on CPU
    assert "| lora_step_s |" in proc.stdout
    # the memory check runs its code path (both checkpointing settings); sizes are measured on a GPU only
    assert res["lora_peak_gib_b2_t24_ckpt"] is None and res["lora_peak_gib_b2_t24_no_ckpt"] is None

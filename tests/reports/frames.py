"""A fixed, hand-written small run (results + timings) for the golden and arithmetic tests.

Two benchmarks; the reference scores emb_vqa 0.50, emb_pope 0.80 and fine-tunes in 100 s.
- alpha @ 10%: seed 0 (0.40, 0.80) → rel (80, 100) → ARP 90; seed 1 (0.30, 0.60) → (60, 75) → ARP 67.5;
  OSC seed 0 (5 + 10) / 100 = 0.15, seed 1 (7 + 11) / 100 = 0.18.
- alpha @ 20%: both seeds (0.45, 0.72) → (90, 90) → ARP 90 ± 0; OSC (5 + 20) / 100 = 0.25.
- beta @ 10%: seed 0 (0.50, 0.40) → (100, 50) → ARP 75; seed 1 has no emb_pope row → N/A for the cell.
- beta @ 20%: seed 0 failed (out of memory), seed 1 (0.25, 0.80) → N/A for the cell.
"""

from __future__ import annotations

import pandas as pd

BENCH = ["emb_vqa", "emb_pope"]
SPEC = {"name": "golden", "benchmarks": BENCH, "world": {"seed": 0, "samples": 1000, "out": "w"}}
METRIC = {"emb_vqa": "exact_match", "emb_pope": "f1"}


def frames(alpha: str = "alpha") -> tuple[pd.DataFrame, pd.DataFrame]:
    scores = {
        ("full", "100%", 0): {"emb_vqa": 0.50, "emb_pope": 0.80},
        (alpha, "10%", 0): {"emb_vqa": 0.40, "emb_pope": 0.80},
        (alpha, "10%", 1): {"emb_vqa": 0.30, "emb_pope": 0.60},
        (alpha, "20%", 0): {"emb_vqa": 0.45, "emb_pope": 0.72},
        (alpha, "20%", 1): {"emb_vqa": 0.45, "emb_pope": 0.72},
        ("beta", "10%", 0): {"emb_vqa": 0.50, "emb_pope": 0.40},
        ("beta", "10%", 1): {"emb_vqa": 0.50},
        ("beta", "20%", 1): {"emb_vqa": 0.25, "emb_pope": 0.80},
    }
    results = []
    for (sel, budget, seed), vals in scores.items():
        for b, v in vals.items():
            results.append({"run": "golden", "selector": sel, "budget": budget, "seed": seed, "benchmark": b,
                            "metric": METRIC[b], "value": v, "n": 200, "stderr": 0.03, "primary": True,
                            "backend": "hf"})
            results.append({"run": "golden", "selector": sel, "budget": budget, "seed": seed, "benchmark": b,
                            "metric": "n_answered", "value": 200.0, "n": 200, "stderr": None, "primary": False,
                            "backend": "hf"})
    timing = {  # (selection_s, finetune_s, feature_extraction_s, proxy_training_s, scoring_s)
        ("full", "100%", 0): (None, 100.0, 0, 0, 0),
        (alpha, "10%", 0): (5.0, 10.0, 2.0, 1.0, 1.5),
        (alpha, "10%", 1): (7.0, 11.0, 3.0, 1.0, 2.0),
        (alpha, "20%", 0): (5.0, 20.0, 2.0, 1.0, 1.5),
        (alpha, "20%", 1): (5.0, 20.0, 2.0, 1.0, 1.5),
        ("beta", "10%", 0): (1.0, 12.0, 0.0, 0.0, 0.5),
        ("beta", "10%", 1): (1.0, 12.0, 0.0, 0.0, 0.5),
        ("beta", "20%", 0): (1.0, None, 0.0, 0.0, 0.5),
        ("beta", "20%", 1): (1.0, 22.0, 0.0, 0.0, 0.5),
    }
    timings = []
    for (sel, budget, seed), (sel_s, ft_s, fe, pt, sc) in timing.items():
        failed = (sel, budget, seed) == ("beta", "20%", 0)
        timings.append({
            "run": "golden", "selector": sel, "budget": budget, "seed": seed,
            "status": "failed" if failed else "done",
            "reason": "finetune: out of memory (RLIMIT_AS 2048 MB)" if failed else None,
            "selection_s": sel_s if sel_s is not None else 0.0, "finetune_s": ft_s,
            "feature_extraction_s": fe, "proxy_training_s": pt, "scoring_s": sc,
            "finetune_gpu_s": 0.0, "score_gpu_s": 0.0, "select_gpu_s": 0.0, "device": "cpu (x86_64, 2 cores)",
            "select_job": f"select-{sel}-{budget}-{seed}", "commit": "0123456789abcdef0123",
            "selbench": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.23.0",
        })
    return pd.DataFrame(results), pd.DataFrame(timings)

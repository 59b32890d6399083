"""Evaluate one checkpoint on every benchmark of the protocol. Each benchmark's result is written as it
finishes (``bench-<name>.json``, in a resume folder beside the store), so a killed evaluation re-runs only the
benchmarks it had not finished."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from selbench.evaluators.benchmarks import get
from selbench.evaluators.embedded import evaluate_hf
from selbench.harness.store import Job, Store


def run(job: Job, store: Store, out: Path) -> dict:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    c = job.config
    model_dir = store.path(job.deps["model"]) / "model"
    resume = store.root / "resume" / job.id
    resume.mkdir(parents=True, exist_ok=True)
    model = processor = None
    rows, parts = [], {}
    for name in c["benchmarks"]:
        bench = get(name)
        done = resume / f"bench-{name}.json"
        if not done.exists():
            if not bench.embedded:
                raise RuntimeError(f"benchmark {name!r} needs lmms-eval (backend {c['backend']!r} runs only the "
                                   f"embedded benchmarks in this version)")
            if model is None:
                model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
                processor = AutoProcessor.from_pretrained(model_dir)
            t0 = time.perf_counter()
            result, preds = evaluate_hf(model, processor, name, Path(c["bench_dir"]), batch_size=c["batch_size"],
                                        max_new_tokens=c["max_new_tokens"])
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps({"rows": result, "seconds": time.perf_counter() - t0,
                                       "predictions": preds}))
            tmp.replace(done)
        saved = json.loads(done.read_text())
        parts[f"eval:{name}"] = saved["seconds"]
        for r in saved["rows"]:
            rows.append({"benchmark": name, **r, "primary": r["metric"] == bench.metric,
                         "backend": c["backend"]})
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return {"parts": parts}

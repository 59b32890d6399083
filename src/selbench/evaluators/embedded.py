"""The direct HF backend (``backend: hf``): the embedded benchmarks scored in-process with the same generation
and metrics as the ``selbench_hf`` lmms-eval model, without lmms-eval's start-up cost. Used where many tiny
checkpoints are evaluated (tests); the demo and real runs go through lmms-eval (selbench.evaluators.lmms)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from selbench.evaluators.benchmarks import get
from selbench.evaluators.items import from_predictions
from selbench.evaluators.lmms import EvaluationError, data_file, task_hash
from selbench.evaluators.metrics import exact_match, pope_metrics

EMBEDDED_MAX_NEW_TOKENS = 8  # what the embedded task YAMLs (lmms_tasks/*.yaml) generate


def score_benchmark(name: str, predictions: list[str], golds: list[str]) -> list[dict]:
    n = len(golds)
    if name == "emb_pope":
        m = pope_metrics(predictions, golds)
        return [{"metric": k, "value": v, "n": n, "stderr": None} for k, v in m.items()]
    acc = sum(exact_match(p, g) for p, g in zip(predictions, golds)) / max(1, n)
    return [{"metric": "exact_match", "value": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / max(1, n))}]


class DirectHF:
    """``with DirectHF(model_dir, bench_dir) as ev: ev.evaluate("emb_vqa")`` — same result shape as
    LmmsEvalSession.evaluate."""

    info = {"backend": "hf (direct)"}

    def __init__(self, model_dir: Path, bench_dir: Path | None, *, batch_size: int = 64,
                 max_new_tokens: int | None = None, generation: dict[str, dict] | None = None) -> None:
        self.model_dir, self.bench_dir = model_dir, bench_dir
        self.batch_size, self.max_new_tokens, self.generation = batch_size, max_new_tokens, generation or {}

    def __enter__(self) -> "DirectHF":
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.model = LlavaForConditionalGeneration.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(self.model_dir)
        return self

    def __exit__(self, *exc) -> None:
        pass

    def evaluate(self, name: str, required: Sequence[str] = ()) -> dict:  # scores every metric it has
        own = (self.generation.get(name) or {}).get("max_new_tokens")
        return evaluate_hf(self.model, self.processor, name, self.bench_dir, batch_size=self.batch_size,
                           max_new_tokens=int(own or self.max_new_tokens or EMBEDDED_MAX_NEW_TOKENS))


def evaluate_hf(model, processor, name: str, bench_dir: Path | None, *, batch_size: int = 64,
                max_new_tokens: int = 8) -> dict:
    """One embedded benchmark with a loaded model: ``{rows, predictions, seconds, task_hash, judge, items}``."""
    from selbench.models.generate import generate_answers

    bench = get(name)
    if not bench.embedded:
        raise EvaluationError(f"benchmark {name} is an lmms-eval task; the direct backend scores only the "
                              f"embedded benchmarks (use backend lmms-eval-hf or lmms-eval-vllm)")
    items = pq.read_table(data_file(bench, bench_dir)).to_pylist()
    t0 = time.perf_counter()
    preds = generate_answers(model, processor, int(model.config.image_seq_length),
                             [(it["question"], it["image"]) for it in items], batch_size=batch_size,
                             max_new_tokens=max_new_tokens)
    golds = [it["answer"] for it in items]
    kind = "pope" if name == "emb_pope" else "mean"
    scores = [exact_match(p, g) for p, g in zip(preds, golds)] if kind == "mean" else []
    return {"rows": score_benchmark(name, preds, golds), "predictions": preds,
            "seconds": time.perf_counter() - t0, "task_hash": task_hash(name, bench_dir), "judge": None,
            "items": from_predictions(kind, preds, golds, scores).to_json()}

"""HF-backend evaluation of the embedded benchmarks (greedy decoding, the shared chat template)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq

from selbench.evaluators.metrics import exact_match, pope_metrics


def score_benchmark(name: str, predictions: list[str], golds: list[str]) -> list[dict]:
    n = len(golds)
    if name == "emb_pope":
        m = pope_metrics(predictions, golds)
        return [{"metric": k, "value": v, "n": n, "stderr": None} for k, v in m.items()]
    acc = sum(exact_match(p, g) for p, g in zip(predictions, golds)) / max(1, n)
    return [{"metric": "exact_match", "value": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / max(1, n))}]


def evaluate_hf(model, processor, name: str, bench_dir: Path, *, batch_size: int = 64,
                max_new_tokens: int = 8) -> tuple[list[dict], list[str]]:
    from selbench.models.generate import generate_answers

    items = pq.read_table(bench_dir / f"{name}.parquet").to_pylist()
    preds = generate_answers(model, processor, int(model.config.image_seq_length),
                             [(it["question"], it["image"]) for it in items], batch_size=batch_size,
                             max_new_tokens=max_new_tokens)
    return score_benchmark(name, preds, [it["answer"] for it in items]), preds

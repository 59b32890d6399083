"""lmms-eval hooks for the embedded benchmarks. Scoring reuses selbench.evaluators.metrics, so a benchmark scores
the same through lmms-eval as through the direct HF backend.

Every task is generative (``generate_until``): lmms-eval 0.7.3's loglikelihood path is broken for multimodal
tasks, and the papers score MMBench / ScienceQA / AI2D by the option letter the model generates anyway.
"""

from __future__ import annotations

import io

from PIL import Image

from selbench.evaluators.metrics import exact_match, pope_metrics


def doc_to_visual(doc: dict) -> list:
    if doc.get("image") is None:
        return []
    return [Image.open(io.BytesIO(doc["image"])).convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    # The world's questions already carry the benchmark's instruction (LLaVA-1.5's "Answer the question using a
    # single word or phrase." / "Answer with the option's letter ..."), as the real tasks' post_prompt does.
    return doc["question"]


def process_exact_match(doc: dict, results: list[str]) -> dict:
    return {"exact_match": exact_match(results[0], doc["answer"])}


POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def process_pope(doc: dict, results: list[str]) -> dict:
    item = {"prediction": results[0], "answer": doc["answer"]}
    return {m: item for m in POPE_METRICS}


def _pope(metric: str, items: list[dict]) -> float:
    return pope_metrics([i["prediction"] for i in items], [i["answer"] for i in items])[metric]


def pope_accuracy(items: list[dict]) -> float:
    return _pope("accuracy", items)


def pope_precision(items: list[dict]) -> float:
    return _pope("precision", items)


def pope_recall(items: list[dict]) -> float:
    return _pope("recall", items)


def pope_f1(items: list[dict]) -> float:
    return _pope("f1", items)


def pope_yes_ratio(items: list[dict]) -> float:
    return _pope("yes_ratio", items)

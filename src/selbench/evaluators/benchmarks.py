"""Benchmark registry: the papers' benchmarks → lmms-eval task, the metric that counts, its direction and scale,
and whether a judge model is needed; plus the embedded benchmarks (versioned set ``embedded_v1``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # lmms-eval task name
    metric: str  # the metric that counts for relative performance
    higher_is_better: bool = True
    scale: float = 1.0  # maximum of the metric (MME's perception is out of 2000)
    judge: bool = False  # needs a judge model (GPT-4 in the papers)
    embedded: bool = False


REGISTRY: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("mmbench_en", "mmbench_en_dev", "gpt_eval_score", scale=100),
    Benchmark("mmbench_cn", "mmbench_cn_dev", "gpt_eval_score", scale=100),
    Benchmark("mme_perception", "mme", "mme_perception_score", scale=2000),
    Benchmark("mme_cognition", "mme", "mme_cognition_score", scale=800),
    Benchmark("ai2d", "ai2d", "exact_match"),
    Benchmark("pope", "pope", "pope_f1_score"),
    Benchmark("scienceqa_img", "scienceqa_img", "exact_match"),
    Benchmark("ocrbench", "ocrbench", "ocrbench_accuracy"),
    Benchmark("textvqa", "textvqa_val", "exact_match"),
    Benchmark("vizwiz", "vizwiz_vqa_val", "exact_match"),
    Benchmark("gqa", "gqa", "exact_match"),
    Benchmark("vqav2", "vqav2_val", "exact_match"),
    Benchmark("mmvet", "mmvet", "gpt_eval_score", scale=100, judge=True),
    Benchmark("llava_bench", "llava_in_the_wild", "gpt_eval_llava_all", scale=100, judge=True),
    Benchmark("mmmu", "mmmu_val", "mmmu_acc"),
    # embedded (generated) benchmarks; tasks shipped in selbench/evaluators/lmms_tasks
    Benchmark("emb_vqa", "emb_vqa", "exact_match", embedded=True),
    Benchmark("emb_mc", "emb_mc", "exact_match", embedded=True),
    Benchmark("emb_pope", "emb_pope", "f1", embedded=True),
    Benchmark("emb_count", "emb_count", "exact_match", embedded=True),
    Benchmark("emb_ocr", "emb_ocr", "exact_match", embedded=True),
]}

BENCHMARK_SETS = {
    "embedded_v1": ["emb_vqa", "emb_mc", "emb_pope", "emb_count", "emb_ocr"],
    "xmas_v1": ["vqav2", "gqa", "vizwiz", "scienceqa_img", "textvqa", "pope", "mme_perception", "mmbench_en",
                "mmbench_cn", "llava_bench", "mmvet"],
    "scalselect_v1": ["ai2d", "mmbench_en", "mme_perception", "ocrbench", "pope", "scienceqa_img", "textvqa",
                      "gqa", "mmmu"],
}


def get(name: str) -> Benchmark:
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def resolve_benchmarks(entries: Iterable[object]) -> list[str]:
    """Benchmark names and set names (expanded in place) → benchmark names, in order. An unknown name fails at
    once with the nearest known names and the full list; a benchmark named twice is an error."""
    names: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"benchmarks: {entry!r} is not a benchmark or set name")
        if entry in BENCHMARK_SETS:
            names += BENCHMARK_SETS[entry]
        elif entry in REGISTRY:
            names.append(entry)
        else:
            known = [*REGISTRY, *BENCHMARK_SETS]
            near = difflib.get_close_matches(entry, known, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"unknown benchmark {entry!r}{hint}; benchmarks: {', '.join(sorted(REGISTRY))}; "
                             f"sets: {', '.join(sorted(BENCHMARK_SETS))}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"benchmarks: {', '.join(twice)} named more than once (directly or through a set)")
    if not names:
        raise ValueError("benchmarks: the spec names none")
    return names

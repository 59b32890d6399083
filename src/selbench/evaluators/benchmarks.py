"""Benchmark registry: the papers' benchmarks → lmms-eval task, its primary metric, direction and scale, and whether
a judge model is needed; plus the embedded benchmarks. What a leaderboard column reads from them is a protocol's
business (``selbench.evaluators.protocols``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from selbench.evaluators.judge_config import Judge, JudgeApi


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # lmms-eval task name
    metric: str  # the metric that counts for relative performance
    higher_is_better: bool = True
    scale: float = 1.0  # maximum of the metric (MME's perception is out of 2000)
    judge: bool = False  # needs a judge model (GPT-4 in the papers)
    embedded: bool = False
    # its score falls back to a GPT matcher whenever it cannot read an answer (MMBench): without a judge it would
    # silently burn retries and guess, so it runs ``judge_free_task`` instead where lmms-eval has one, or fails
    judge_fallback: bool = False
    judge_free_task: str | None = None
    # how the task's code reaches the judge (selbench.evaluators.judge): the OpenAI client with a base URL
    # (MM-Vet, LLaVA-Bench) or a POST to the full endpoint URL (MMBench's matcher)
    judge_api: "JudgeApi" = "client"
    # why a seeded item subset (evaluation.limit) would not measure the benchmark, or None where it does
    no_subset: str | None = None
    # where its per-item outcomes come from (selbench.evaluators.items): the per-sample log, or MMBench's evaluator,
    # which scores each question with its circular copies and logs no per-question result
    outcomes: Literal["samples", "mmbench"] = "samples"


CIRCULAR = "its circular evaluation scores a question only with all its rotated copies"
REGISTRY: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("mmbench_en", "mmbench_en_dev", "gpt_eval_score", scale=100, judge_fallback=True,
              # the judge-free variant: regex/substring option matching, no API
              judge_free_task="mmbench_en_dev_static", judge_api="endpoint", no_subset=CIRCULAR, outcomes="mmbench"),
    Benchmark("mmbench_cn", "mmbench_cn_dev", "gpt_eval_score", scale=100, judge_fallback=True,
              judge_api="endpoint", no_subset=CIRCULAR, outcomes="mmbench"),
    # one run gives both MME scores: perception (out of 2000) is primary, cognition (out of 800) a second column
    Benchmark("mme", "mme", "mme_perception_score", scale=2000,
              no_subset="its score counts an image right only when both of its questions are"),
    # lmms-eval's ai2d scores only under its filter (MultiChoiceRegexFilter): the results key is metric,filter
    Benchmark("ai2d", "ai2d", "exact_match,flexible-extract"),
    Benchmark("pope", "pope", "pope_f1_score"),  # all three splits in one run (9,000 items)
    Benchmark("pope_random", "pope_random", "pope_f1_score"),
    Benchmark("pope_pop", "pope_pop", "pope_f1_score"),
    Benchmark("pope_adv", "pope_adv", "pope_f1_score"),
    Benchmark("scienceqa_img", "scienceqa_img", "exact_match"),
    Benchmark("ocrbench", "ocrbench", "ocrbench_accuracy",
              no_subset="its aggregation divides the correct answers by 1,000 whatever the number of items"),
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

def task_for(bench: Benchmark, judge: "Judge | None") -> str:
    """The lmms-eval task to run for ``bench`` given the spec's judge — never a silent judge fallback: a judge-scored
    benchmark without a judge fails; one whose score falls back to a GPT matcher runs its judge-free variant
    (recorded in the results as the task that ran) or fails when lmms-eval has none."""
    if judge:
        return bench.task
    if bench.judge:
        raise ValueError(f"benchmark {bench.name} is scored by a judge model (GPT-4 in the papers); set "
                         f"evaluation.judge (its model, base_url and the variable holding its API key)")
    if bench.judge_fallback:
        if bench.judge_free_task is None:
            raise ValueError(f"benchmark {bench.name} ({bench.task}) falls back to a GPT matcher whenever it cannot "
                             f"read an answer, and lmms-eval has no judge-free variant of it: set evaluation.judge "
                             f"or leave the benchmark out")
        return bench.judge_free_task
    return bench.task


def get(name: str) -> Benchmark:
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


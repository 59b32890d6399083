"""Per-item outcomes: what each benchmark item contributes to its metrics, so any metric — corpus-level ones such as
POPE's F1 included — can be recomputed on a resample of items (the paired bootstrap in
``selbench.leaderboard.statistics``).

Each benchmark's items get one *kind* of sufficient statistics, a row of numbers per item whose column sums
determine every metric of that benchmark:
- ``mean``: ``[score, w]`` — exact match, accuracy (metric = Σscore / Σw, w = 1: the mean); OCRBench's
  ``ocrbench_accuracy`` gets w = 1,000 / n, since lmms-eval divides its correct answers by OCRBench's 1,000 items
  whatever number ran (the same on the full set, where w = 1);
- ``pope``: ``[tp, fp, fn, tn]`` indicators of the yes/no answer (positive = yes) under POPE's own rule (an answer
  containing "no"/"not" is no, anything else yes), from which accuracy, precision, recall, F1 and the yes-ratio
  follow — the embedded ``emb_pope``;
- ``pope_lmms``: ``[tp, fp, fn, correct, gold yes, 1]`` under lmms-eval's rule for its POPE tasks (``pope``,
  ``pope_random`` / ``_pop`` / ``_adv``): only a bare "yes" / "no" (lower-cased, stripped) is an answer, anything else
  is wrong for accuracy and counts in neither precision nor recall, and lmms-eval's yes-ratio is the share of items
  whose *gold* answer is yes — so a resample recomputes exactly the values lmms-eval reports;
- ``mme``: one row per *image* (MME's unit: two questions per image, scored as a pair), a block of
  ``MME_BLOCK`` per subtask of ``MME_SUBTASKS`` — [correct questions, all of the image's questions correct,
  questions, 1] — zeros for the subtasks the image is not in; each subtask's score is
  100·(Σcorrect/Σquestions + Σboth/Σimages), summed over the perception or cognition subtasks.
The judge-scored benchmarks are ``mean`` rows too: MM-Vet ``[100 · score, 1]``; LLaVA-Bench ``[100 · model's score,
reference's score]`` (Σ / Σ: lmms-eval's ratio of means, before its rounding). MMBench's questions are ``mean`` rows
``[100 · hit, 1]``: its evaluator scores a question together with its circular
copies (index + k·10⁶, the options rotated) and logs only the mean, so the hit of each question is observed as the
evaluator computes it (:func:`mmbench_hits`); their mean is lmms-eval's ``gpt_eval_score``.
They are read from lmms-eval's per-sample log (or, for the direct HF backend, from the predictions) and stored by
the evaluate stage as ``items.parquet`` (benchmark, item, kind, stats). A benchmark whose samples carry no
per-item outcome we can read gets none: its columns then have no confidence interval (said in the report), but
its value still counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from selbench.evaluators.metrics import normalize_answer, yes_no

# MME's subtasks as lmms-eval's ``eval_type_dict`` names them; block j of the mme layout is MME_SUBTASKS[j]
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_SUBTASKS = MME_PERCEPTION + MME_COGNITION
MME_BLOCK = ("correct", "both_correct", "questions", "images")  # the 4 statistics of one block
# the judge-scored benchmarks' per-sample records: MM-Vet's {…, "score": the judge's 0–1}, reported as the mean × 100;
# LLaVA-Bench's {…, "scores": [the reference answer's, the model's]} (1–10 each), reported as
# mean(model) / mean(reference) × 100 (lmms-eval rounds both means to 3 decimals and the ratio to 1)
MMVET_KEY = "gpt_eval_score"
LLAVA_BENCH_KEY = "gpt_eval_llava_all"
OCRBENCH_KEY = "ocrbench_accuracy"  # lmms-eval's per-sample record: {question_type, score, prediction, ground_truth}
OCRBENCH_ITEMS = 1000  # its aggregation: Σscore / 1,000
# lmms-eval's per-sample records: 0.7.3 writes mme_perception_score (the rehearsal, tests/evaluators/
# test_real_tasks.py, reads it); earlier versions spelled it mme_percetion_score
MME_KEYS = ("mme_perception_score", "mme_percetion_score", "mme_cognition_score")


def mme_rows(image_ids: Sequence[str], subtasks: Sequence[str], correct: Sequence[bool]
             ) -> tuple[list[str], list[list[float]]]:
    """One row per image (first-seen order) from one entry per question: its image, subtask and correctness."""
    if not len(image_ids) == len(subtasks) == len(correct):
        raise ValueError("image_ids, subtasks and correct must have one entry per question")
    unknown = sorted(set(subtasks) - set(MME_SUBTASKS))
    if unknown:
        raise ValueError(f"unknown MME subtasks {', '.join(unknown)}; known: {', '.join(MME_SUBTASKS)}")
    index = {img: i for i, img in enumerate(dict.fromkeys(image_ids))}
    rows = [[0.0] * (len(MME_BLOCK) * len(MME_SUBTASKS)) for _ in index]
    for img, task, ok in zip(image_ids, subtasks, correct):
        b = 4 * MME_SUBTASKS.index(task)
        rows[index[img]][b] += float(bool(ok))
        rows[index[img]][b + 2] += 1.0
    for row in rows:  # per (image, subtask) present: both-correct flag and the image count
        for b in range(0, len(row), 4):
            if row[b + 2] > 0:
                row[b + 1], row[b + 3] = float(row[b] == row[b + 2]), 1.0
    return list(index), rows


@dataclass
class ItemOutcomes:
    kind: str  # "mean" | "pope" | "pope_lmms" | "mme"
    ids: list[str]  # benchmark item ids (lmms-eval's doc_id; MME: the image), the same for every checkpoint
    stats: list[list[float]]  # one row per item

    def to_json(self) -> dict:
        return {"kind": self.kind, "ids": self.ids, "stats": self.stats}

    @classmethod
    def from_json(cls, data: dict) -> ItemOutcomes:
        return cls(str(data["kind"]), [str(i) for i in data["ids"]], [list(map(float, r)) for r in data["stats"]])


def pope_row(prediction: str, answer: str) -> list[float]:
    """[tp, fp, fn, tn] with POPE's rule (an answer containing "no"/"not" is no, anything else yes)."""
    pred, gold = yes_no(prediction) == "yes", normalize_answer(answer) == "yes"
    return [float(pred and gold), float(pred and not gold), float(not pred and gold), float(not pred and not gold)]


def pope_lmms_row(prediction: str, answer: str) -> list[float]:
    """[tp, fp, fn, correct, gold yes, 1] with lmms-eval's rule (``pope_process_results`` and the
    ``pope_aggregate_*`` functions of its POPE task): an answer other than a bare yes / no is simply wrong."""
    pred, gold = prediction.lower().strip(), answer.lower().strip()
    return [float(pred == "yes" and gold == "yes"), float(pred == "yes" and gold == "no"),
            float(pred == "no" and gold == "yes"), float(pred == gold), float(gold == "yes"), 1.0]


# a POPE sample's per-item record → its outcome kind and row: lmms-eval's POPE tasks, the embedded emb_pope task
POPE_KEYS = {"pope_accuracy": ("pope_lmms", pope_lmms_row), "accuracy": ("pope", pope_row)}


def from_predictions(kind: str, predictions: Sequence[str], golds: Sequence[str], scores: Sequence[float] = ()
                     ) -> ItemOutcomes:
    """The direct backend's outcomes: items numbered in data order (as lmms-eval's doc_id)."""
    ids = [str(i) for i in range(len(golds))]
    if kind == "pope":
        return ItemOutcomes("pope", ids, [pope_row(p, g) for p, g in zip(predictions, golds)])
    return ItemOutcomes("mean", ids, [[float(s), 1.0] for s in scores])


def from_samples(samples: Sequence[dict], metric: str) -> ItemOutcomes | None:
    """Outcomes from lmms-eval's per-sample log (``*_samples_<task>.jsonl`` records, sorted by doc_id): a POPE
    record (prediction and answer), or the benchmark's primary ``metric`` as a per-item number. None when the
    samples carry neither (e.g. a judge's or a submission-only metric)."""
    if not samples:
        return None
    if any(isinstance(samples[0].get(k), dict) for k in MME_KEYS):
        recs = [next(s[k] for k in MME_KEYS if isinstance(s.get(k), dict)) for s in samples]
        img, rows = mme_rows([str(r["question_id"]) for r in recs], [str(r["category"]) for r in recs],
                             [float(r["score"]) > 0 for r in recs])
        return ItemOutcomes("mme", img, rows)
    ids = [str(s["doc_id"]) for s in samples]
    first = samples[0]
    pope_key = next((k for k in POPE_KEYS if isinstance(first.get(k), dict)), None)
    if pope_key is not None:
        kind, row = POPE_KEYS[pope_key]
        rows = []
        for s in samples:
            rec = s[pope_key]
            answer = rec.get("answer", rec.get("ground_truth"))
            if answer is None or "prediction" not in rec:
                return None
            rows.append(row(str(rec["prediction"]), str(answer)))
        return ItemOutcomes(kind, ids, rows)
    if isinstance(first.get(OCRBENCH_KEY), dict):
        scores = _numbers(_field(samples, OCRBENCH_KEY, "score"))
        weight = OCRBENCH_ITEMS / len(samples)
        return None if scores is None else ItemOutcomes("mean", ids, [[x, weight] for x in scores])
    if metric == LLAVA_BENCH_KEY and isinstance(first.get(metric), dict):
        pairs = [_numbers(p) if isinstance(p, list) and len(p) == 2 else None
                 for p in _field(samples, metric, "scores")]
        if any(p is None for p in pairs):
            return None
        return ItemOutcomes("mean", ids, [[100.0 * p[1], p[0]] for p in pairs if p is not None])
    if metric == MMVET_KEY and isinstance(first.get(metric), dict) and "score" in first[metric]:
        scores = _numbers(_field(samples, metric, "score"))
        return None if scores is None else ItemOutcomes("mean", ids, [[100.0 * x, 1.0] for x in scores])
    scores = _numbers([s.get(metric) for s in samples])
    return None if scores is None else ItemOutcomes("mean", ids, [[x, 1.0] for x in scores])


def _field(samples: Sequence[dict], key: str, field: str) -> list[object]:
    """Each sample's ``field`` of its ``key`` record (None where the record or the field is missing)."""
    return [s[key].get(field) if isinstance(s.get(key), dict) else None for s in samples]


def _numbers(values: Sequence[object]) -> list[float] | None:
    """The values as floats, or None when any is not a number (a bool is not)."""
    return [float(v) for v in values] if all(_number(v) for v in values) else None  # type: ignore[arg-type]


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


CIRCULAR_STRIDE = 1_000_000  # MMBench's circular copies of question i have indices i + k·10⁶


@contextlib.contextmanager
def mmbench_hits() -> Iterator[dict[int, int]]:
    """MMBench's per-question hits while lmms-eval aggregates, keyed by the question's index: its evaluator's
    ``eval_sub_data`` scores one question with all its circular copies (1 only when every copy is right) and the
    evaluator keeps only the mean. The method is observed for the block (wrapped, result unchanged)."""
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    hits: dict[int, int] = {}
    original = MMBench_Evaluator.eval_sub_data

    def observed(self, sub_data, answer_map, static_only=False):
        ret = original(self, sub_data, answer_map, static_only=static_only)
        hits[int(sub_data["index"].iloc[0]) % CIRCULAR_STRIDE] = int(ret)
        return ret

    MMBench_Evaluator.eval_sub_data = observed
    try:
        yield hits
    finally:
        MMBench_Evaluator.eval_sub_data = original


def from_mmbench_hits(hits: dict[int, int], samples: Sequence[dict]) -> ItemOutcomes | None:
    """``[100 · hit, 1]`` (lmms-eval reports MMBench × 100) per logged sample of a question (index < 10⁶), ids the
    samples' doc ids: the rows lmms-eval's evaluator averages, so a repeated question counts as often as it does
    there. None when no hit was seen, or a question's record or hit is missing."""
    if not hits:
        return None
    ids, rows = [], []
    for s in samples:
        rec = next((r for r in s.values() if isinstance(r, dict) and _number(r.get("index"))), None)
        if rec is None:
            return None
        index = int(rec["index"])
        if index >= CIRCULAR_STRIDE:  # a circular copy: folded into its question's hit
            continue
        if index not in hits:
            return None
        ids.append(str(s["doc_id"]))
        rows.append([100.0 * hits[index], 1.0])
    return ItemOutcomes("mean", ids, rows) if rows else None

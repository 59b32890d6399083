"""Per-benchmark metrics for the embedded tasks, mirroring the real benchmarks' scoring rules."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """VQAv2-style normalisation: lower case, punctuation dropped, articles dropped, spaces folded."""
    text = _PUNCT.sub(" ", text.lower())
    words = [w for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def yes_no(pred: str) -> str:
    """POPE's rule: an answer that starts with/contains 'no' (or "not") is no, anything else is yes."""
    words = normalize_answer(pred).split()
    return "no" if any(w in ("no", "not") for w in words) else "yes"


def pope_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = yes) and yes-ratio, as POPE reports them."""
    p = [yes_no(x) for x in preds]
    g = [normalize_answer(x) for x in golds]
    tp = sum(a == "yes" and b == "yes" for a, b in zip(p, g))
    fp = sum(a == "yes" and b == "no" for a, b in zip(p, g))
    fn = sum(a == "no" and b == "yes" for a, b in zip(p, g))
    acc = sum(a == b for a, b in zip(p, g)) / max(1, len(g))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"accuracy": acc, "precision": prec, "recall": rec, "f1": f1,
            "yes_ratio": sum(a == "yes" for a in p) / max(1, len(p))}

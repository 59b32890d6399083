"""A fixed, hand-written small run (results + timings) for the golden and arithmetic tests.

Two benchmarks; the reference scores emb_vqa 0.50, emb_pope 0.80 and fine-tunes in 100 s.
- alpha @ 10%: seed 0 (0.40, 0.80) → rel (80, 100) → ARP 90; seed 1 (0.30, 0.60) → (60, 75) → ARP 67.5;
  OSC seed 0 (5 + 10) / 100 = 0.15, seed 1 (7 + 11) / 100 = 0.18.
- alpha @ 20%: both seeds (0.45, 0.72) → (90, 90) → ARP 90 ± 0; OSC (5 + 20) / 100 = 0.25.
- beta @ 10%: seed 0 (0.50, 0.40) → (100, 50) → ARP 75; seed 1 has no emb_pope row → N/A for the cell.
- beta @ 20%: seed 0 failed (out of memory), seed 1 (0.25, 0.80) → N/A for the cell.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

BENCH = ["emb_vqa", "emb_pope"]
SPEC = {"name": "golden", "benchmarks": BENCH, "world": {"seed": 0, "samples": 1000, "out": "w"}}
METRIC = {"emb_vqa": "exact_match", "emb_pope": "f1"}


def frames(alpha: str = "alpha") -> tuple[pd.DataFrame, pd.DataFrame]:
    scores = {
        ("full", "100%", 0): {"emb_vqa": 0.50, "emb_pope": 0.80},
        (alpha, "10%", 0): {"emb_vqa": 0.40, "emb_pope": 0.80},
        (alpha, "10%", 1): {"emb_vqa": 0.30, "emb_pope": 0.60},
        (alpha, "20%", 0): {"emb_vqa": 0.45, "emb_pope": 0.72},
        (alpha, "20%", 1): {"emb_vqa": 0.45, "emb_pope": 0.72},
        ("beta", "10%", 0): {"emb_vqa": 0.50, "emb_pope": 0.40},
        ("beta", "10%", 1): {"emb_vqa": 0.50},
        ("beta", "20%", 1): {"emb_vqa": 0.25, "emb_pope": 0.80},
    }
    results = []
    for (sel, budget, seed), vals in scores.items():
        for b, v in vals.items():
            results.append({"run": "golden", "selector": sel, "budget": budget, "seed": seed, "benchmark": b,
                            "metric": METRIC[b], "value": v, "n": 200, "stderr": 0.03, "primary": True,
                            "backend": "hf"})
            results.append({"run": "golden", "selector": sel, "budget": budget, "seed": seed, "benchmark": b,
                            "metric": "n_answered", "value": 200.0, "n": 200, "stderr": None, "primary": False,
                            "backend": "hf"})
    timing = {  # (selection_s, finetune_s, feature_extraction_s, proxy_training_s, scoring_s)
        ("full", "100%", 0): (None, 100.0, 0, 0, 0),
        (alpha, "10%", 0): (5.0, 10.0, 2.0, 1.0, 1.5),
        (alpha, "10%", 1): (7.0, 11.0, 3.0, 1.0, 2.0),
        (alpha, "20%", 0): (5.0, 20.0, 2.0, 1.0, 1.5),
        (alpha, "20%", 1): (5.0, 20.0, 2.0, 1.0, 1.5),
        ("beta", "10%", 0): (1.0, 12.0, 0.0, 0.0, 0.5),
        ("beta", "10%", 1): (1.0, 12.0, 0.0, 0.0, 0.5),
        ("beta", "20%", 0): (1.0, None, 0.0, 0.0, 0.5),
        ("beta", "20%", 1): (1.0, 22.0, 0.0, 0.0, 0.5),
    }
    timings = []
    for (sel, budget, seed), (sel_s, ft_s, fe, pt, sc) in timing.items():
        failed = (sel, budget, seed) == ("beta", "20%", 0)
        timings.append({
            "run": "golden", "selector": sel, "budget": budget, "seed": seed,
            "status": "failed" if failed else "done",
            "reason": "finetune: out of memory (RLIMIT_AS 2048 MB)" if failed else None,
            "selection_s": sel_s if sel_s is not None else 0.0, "finetune_s": ft_s,
            "feature_extraction_s": fe, "proxy_training_s": pt, "scoring_s": sc,
            "finetune_gpu_s": 0.0, "score_gpu_s": 0.0, "select_gpu_s": 0.0, "device": "cpu (x86_64, 2 cores)",
            "select_job": f"select-{sel}-{budget}-{seed}", "commit": "0123456789abcdef0123",
            "selbench": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.23.0",
        })
    return pd.DataFrame(results), pd.DataFrame(timings)


# ------------------------------------------------------------------------------------------ demo-shaped run
# configs/demo.yaml's shape without running it: seven selectors × three budgets + the reference, protocol
# embedded_v1, per-item outcomes (so the report has CIs), a 1,000-row pool and every cell's selection in a store.
# What can go wrong, once each: xmas @ 20% failed at fine-tuning; prism @ 30% has no emb_ocr result; coincide @ 30%
# never ran (no selection either); every cell and the reference score the same on emb_count (all tie).

DEMO_SELECTORS = ["random", "length", "perplexity", "coincide", "prism", "xmas", "scalselect"]
DEMO_BUDGETS = ["10%", "20%", "30%"]
DEMO_BENCH = ["emb_vqa", "emb_mc", "emb_pope", "emb_count", "emb_ocr"]
DEMO_POOL = 1000
DEMO_ITEMS = 60
DEMO_DEVICE = "cpu (x86_64, 2 cores)"
DEMO_FAILED = ("xmas", "20%", 0)
DEMO_NO_OCR = ("prism", "30%", 0)
DEMO_MISSING = ("coincide", "30%", 0)
DEMO_SOURCES = {"coco": 0.4, "gqa": 0.25, "ocr_vqa": 0.15}  # the rest is text-only
DEMO_SKILLS = ["color", "count", "ocr", "yesno", "caption"]


def demo_spec(store: str) -> dict:
    return {"name": "demo", "world": {"seed": 0, "samples": DEMO_POOL, "out": "w", "bench_items": DEMO_ITEMS},
            "selectors": [{"name": s} for s in DEMO_SELECTORS], "budgets": [0.1, 0.2, 0.3], "seeds": [0],
            "benchmarks": DEMO_BENCH, "protocol": "embedded_v1", "store": store,
            "statistics": {"replicates": 200, "seed": 0, "confidence": 0.95}}


def demo_pool() -> pd.DataFrame:
    """A manifest frame: sources by image folder (and text-only rows), skills, lengths, repeated images."""
    import json

    import numpy as np

    rng = np.random.default_rng(7)
    rows = []
    cuts = np.cumsum(list(DEMO_SOURCES.values()))
    for i in range(DEMO_POOL):
        u = rng.random()
        source = next((s for s, c in zip(DEMO_SOURCES, cuts) if u < c), None)
        image_no = i if rng.random() > 0.2 else i // 4  # a fifth of the rows reuse an image
        image = f"{source}/images/{image_no:06d}.jpg" if source else None
        words = " ".join(["word"] * int(rng.integers(3, 60)))
        turns = [["human", ("<image>\n" if image else "") + f"Question {i}? {words}"], ["gpt", "answer " * (i % 5)]]
        rows.append({"index": i, "uid": f"u{i:05d}", "source_id": f"s{i}", "row": i, "image": image,
                     "image_sha256": f"sha-{source}-{image_no}" if image else None,
                     "turns": json.dumps(turns), "n_turns": 1, "skill": DEMO_SKILLS[int(rng.integers(5))]})
    return pd.DataFrame(rows)


def demo_selections(pool: pd.DataFrame) -> dict[tuple[str, str, int], list[str]]:
    """Each cell's uids (the missing cell has none): random rows, the longest rows, rows of one source …"""
    import numpy as np

    out = {}
    lengths = pool["turns"].str.len().to_numpy()
    for s, sel in enumerate(DEMO_SELECTORS):
        for budget in DEMO_BUDGETS:
            if (sel, budget, 0) == DEMO_MISSING:
                continue
            k = DEMO_POOL * int(budget[:-1]) // 100
            rng = np.random.default_rng(s * 10 + int(budget[:-1]))
            if sel == "length":
                idx = np.argsort(-lengths, kind="stable")[:k]
            elif sel == "prism":  # prefers images, a coco-heavy pick
                weight = np.where(pool["image"].fillna("").str.startswith("coco"), 5.0, 1.0)
                idx = rng.choice(DEMO_POOL, k, replace=False, p=weight / weight.sum())
            else:
                idx = rng.choice(DEMO_POOL, k, replace=False)
            out[(sel, budget, 0)] = [pool["uid"].iat[i] for i in sorted(idx)]
    return out


def demo_frames(store: str = "store") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(results, timings, items, spec) of the demo-shaped run."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = DEMO_ITEMS
    gold_yes = rng.random(n) < 0.5
    count_right = rng.random(n) < 0.4  # one answer vector for every cell: emb_count ties everywhere
    cells = [("full", "100%", 0)] + [(s, b, 0) for s in DEMO_SELECTORS for b in DEMO_BUDGETS]
    results, timings, items = [], [], []
    for sel, budget, seed in cells:
        key = (sel, budget, seed)
        lineage = {"prepare_job": "prepare-demo", "spec_hash": "0f1e2d3c4b5a", "commit": "0123456789abcdef0123",
                   "selbench": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.23.0"}
        if sel != "full":
            lineage.update(score_job=f"score-{sel}", select_job=f"select-{sel}-{budget[:-1]}")
        lineage.update(finetune_job=f"finetune-{sel}-{budget[:-1]}", evaluate_job=f"evaluate-{sel}-{budget[:-1]}")
        failed, missing = key == DEMO_FAILED, key == DEMO_MISSING
        row = {"run": "demo", "selector": sel, "budget": budget, "seed": seed,
               "status": "failed" if failed else ("missing" if missing else "done"),
               "reason": "finetune: out of memory (RLIMIT_AS 2048 MB)" if failed else None,
               "pool_fingerprint": "abc123", "device": DEMO_DEVICE, **lineage}
        if missing:
            timings.append(row)
            continue
        size = 1.0 if sel == "full" else int(budget[:-1]) / 100
        skill = 0.0 if sel == "full" else 0.08 * DEMO_SELECTORS.index(sel) / len(DEMO_SELECTORS)
        p = 0.7 if sel == "full" else 0.35 + 0.5 * size + skill
        row.update(selection_s=None if sel == "full" else 3.0 + DEMO_SELECTORS.index(sel),
                   finetune_s=100.0 * size, feature_extraction_s=0.0 if sel in ("random", "length") else 1.5,
                   proxy_training_s=2.0 if sel == "xmas" else 0.0, scoring_s=0.5, score_gpu_s=0.0,
                   select_gpu_s=0.0, finetune_gpu_s=0.0, score_wall_s=2.0, select_wall_s=1.0)
        if failed:
            row.update(finetune_s=None)
            timings.append(row)
            continue
        row.update(finetune_wall_s=100.0 * size, evaluate_wall_s=5.0)
        timings.append(row)
        for bench in DEMO_BENCH:
            if key == DEMO_NO_OCR and bench == "emb_ocr":
                continue
            right = count_right if bench == "emb_count" else rng.random(n) < p
            _outcomes(results, items, key, bench, right, gold_yes)
    return pd.DataFrame(results), pd.DataFrame(timings), pd.DataFrame(items), demo_spec(store)


def _outcomes(results: list, items: list, cell: tuple, bench: str, right, gold_yes) -> None:
    """Append one cell's result row and per-item outcomes on ``bench`` (``right``: which items it answered right)."""
    import numpy as np

    sel, budget, seed = cell
    n = len(right)
    if bench == "emb_pope":
        pred = np.where(right, gold_yes, ~gold_yes)
        stats = np.stack([pred & gold_yes, pred & ~gold_yes, ~pred & gold_yes, ~pred & ~gold_yes], 1)
        tp, fp, fn = stats[:, 0].sum(), stats[:, 1].sum(), stats[:, 2].sum()
        value, metric, kind = 2 * tp / (2 * tp + fp + fn), "f1", "pope"
    else:
        stats = np.stack([right, np.ones(n, bool)], 1)
        value, metric, kind = right.mean(), "exact_match", "mean"
    results.append({"run": "demo", "selector": sel, "budget": budget, "seed": seed, "benchmark": bench,
                    "metric": metric, "value": float(value), "n": n, "primary": True, "backend": "hf"})
    items += [{"selector": sel, "budget": budget, "seed": seed, "benchmark": bench, "item": str(i),
               "kind": kind, "stats": stats[i].astype(float).tolist()} for i in range(n)]


def demo_store(root) -> Path:
    """A store holding the demo-shaped run: ``root/jobs`` (the pool manifest, every selection, each job's
    meta.json) and the run folder ``root/runs/demo`` (results, timings, items, spec). Returns the run folder."""
    root = Path(root)
    pool = demo_pool()
    # the failed job left no meta.json: its lineage link goes nowhere
    return write_store(root, "demo", demo_frames(str(root)), pool, demo_selections(pool),
                       no_meta=frozenset({"finetune-xmas-20"}))


def write_store(root: Path, name: str, frames: tuple, pool, selections: dict, no_meta: frozenset = frozenset()
                ) -> Path:
    """Lay a run's frames out as a store: the pool manifest, each selection, a meta.json per lineage job (but
    ``no_meta``), and the run folder ``root/runs/<name>``, which it returns."""
    import json

    from selbench.pool.manifest import Manifest, save_manifest

    results, timings, items, spec = frames
    save_manifest(Manifest(pool, root / "images", "demo-pool-hash", "demo.json"),
                  root / "jobs" / "prepare-demo" / "manifest.parquet")
    for (sel, budget, _), uids in selections.items():
        path = root / "jobs" / f"select-{sel}-{budget[:-1]}" / "selection.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(uids) + "\n")
    for col in ("prepare_job", "score_job", "select_job", "finetune_job", "evaluate_job"):
        for jid in timings[col].dropna().unique() if col in timings else []:
            if jid in no_meta:
                continue
            meta = root / "jobs" / jid / "meta.json"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"job": jid}))
    run_dir = root / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    results.to_parquet(run_dir / "results.parquet", index=False)
    timings.to_parquet(run_dir / "timings.parquet", index=False)
    items.to_parquet(run_dir / "items.parquet", index=False)
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return run_dir


# ------------------------------------------------------------------------------- with sanity references
# The demo-shaped run plus the spec's sanity references: oracle and anti-oracle subsets at every budget (seed 0)
# and the untuned target at budget 0% (no select or fine-tune job). The oracle answers more items right than any
# selector and the full-data reference (the highest ARP of the run), the anti-oracle and the untuned target fewer.

SANITY_P = {"oracle": 0.95, "anti-oracle": 0.15, "untuned": 0.2}  # the share of items each answers right


def frames_with_sanity(store: str = "store") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(results, timings, items, spec) of the demo-shaped run with oracle, anti-oracle and untuned rows."""
    import numpy as np

    results, timings, items, spec = demo_frames(store)
    n = DEMO_ITEMS
    first = np.random.default_rng(0)  # demo_frames' first two draws: the gold answers, the tied emb_count
    gold_yes, count_right = first.random(n) < 0.5, first.random(n) < 0.4
    rng = np.random.default_rng(1)
    cells = [(k, b, 0) for k in ("oracle", "anti-oracle") for b in DEMO_BUDGETS] + [("untuned", "0%", 0)]
    new_results, new_timings, new_items = [], [], []
    for sel, budget, seed in cells:
        tuned = sel != "untuned"
        size = int(budget[:-1]) / 100
        new_timings.append({
            "run": "demo", "selector": sel, "budget": budget, "seed": seed, "status": "done", "reason": None,
            "pool_fingerprint": "abc123", "device": DEMO_DEVICE, "prepare_job": "prepare-demo",
            "spec_hash": "0f1e2d3c4b5a", "commit": "0123456789abcdef0123", "selbench": "0.1.0",
            "torch": "2.13.0+cpu", "transformers": "5.23.0",
            "select_job": f"select-{sel}-{budget[:-1]}" if tuned else None,
            "finetune_job": f"finetune-{sel}-{budget[:-1]}" if tuned else None,
            "evaluate_job": f"evaluate-{sel}-{budget[:-1]}", "selection_s": 0.5 if tuned else None,
            "finetune_s": 100.0 * size if tuned else None, "score_gpu_s": 0.0, "select_gpu_s": 0.0,
            "finetune_gpu_s": 0.0, "select_wall_s": 0.5 if tuned else None,
            "finetune_wall_s": 100.0 * size if tuned else None, "evaluate_wall_s": 5.0})
        for bench in DEMO_BENCH:
            right = count_right if bench == "emb_count" else rng.random(n) < SANITY_P[sel]
            _outcomes(new_results, new_items, (sel, budget, seed), bench, right, gold_yes)
    spec = {**spec, "name": "sanity", "references": ["oracle", "anti-oracle", "untuned"]}
    return (pd.concat([results, pd.DataFrame(new_results)], ignore_index=True),
            pd.concat([timings, pd.DataFrame(new_timings)], ignore_index=True),
            pd.concat([items, pd.DataFrame(new_items)], ignore_index=True), spec)

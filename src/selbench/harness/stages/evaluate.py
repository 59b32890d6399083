"""Evaluate one checkpoint on every benchmark of the protocol, through lmms-eval (``lmms-eval-hf`` /
``lmms-eval-vllm``) or the direct HF backend (``hf``).

Each benchmark's result is saved as it finishes (``bench-<name>.json`` in a resume folder beside the store), so a
killed evaluation re-runs only the benchmarks it had not finished. A benchmark that fails (missing data, a crashed
model or server, malformed lmms-eval output, a judge-scored benchmark without a judge) does not stop the others;
the job then fails with every such benchmark named, and the cell shows that reason instead of an ARP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from selbench.evaluators.benchmarks import get
from selbench.evaluators.items import ItemOutcomes
from selbench.evaluators.lmms import EvaluationError
from selbench.harness.contracts import EvaluateConfig
from selbench.harness.store import Job, Store

ITEMS = "items.parquet"  # per-item outcomes: benchmark, item, kind, stats (selbench.evaluators.items)
ITEM_COLUMNS = ["benchmark", "item", "kind", "stats"]


def _session(c: EvaluateConfig, model_dir: Path, work: Path, names: list[str]):
    bench_dir = Path(c.bench_dir) if c.bench_dir else None
    if c.backend == "hf":
        from selbench.evaluators.embedded import DirectHF

        return DirectHF(model_dir, bench_dir, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens,
                        generation=c.generation)
    from selbench.evaluators.lmms import LmmsEvalSession

    return LmmsEvalSession(c.backend, model_dir, work, names, bench_dir, batch_size=c.batch_size,
                           max_new_tokens=c.max_new_tokens, generation=c.generation, judge=c.judge,
                           vllm_args=c.vllm_args, task_data=Path(c.task_data) if c.task_data else None,
                           max_over_context=c.max_over_context, limit=c.limit, limit_seed=c.limit_seed)


def run(job: Job, store: Store, out: Path) -> dict:
    c = EvaluateConfig.parse(job)
    model_dir = Path(c.model) if c.model else store.path(job.deps["model"]) / "model"
    resume = store.root / "resume" / job.id
    resume.mkdir(parents=True, exist_ok=True)
    missing = [n for n in c.benchmarks if not (resume / f"bench-{n}.json").exists()]
    errors: dict[str, str] = {}
    if missing:
        with _session(c, model_dir, resume / "work", missing) as session:
            for name in missing:
                try:
                    required = c.required.get(name) or [get(name).metric]
                    result = session.evaluate(name, required)
                    have = {r["metric"] for r in result["rows"]}
                    if not set(required) <= have:
                        raise EvaluationError(f"results lack the metric(s) {', '.join(sorted(set(required) - have))} "
                                              f"that the protocol reads (have: {', '.join(sorted(have))})")
                except Exception as e:  # one benchmark's failure must not cost the others
                    errors[name] = f"{type(e).__name__}: {e}" if not isinstance(e, EvaluationError) else str(e)
                    continue
                done = resume / f"bench-{name}.json"
                tmp = done.with_suffix(".tmp")
                tmp.write_text(json.dumps({**result, **session.info}))
                tmp.replace(done)
    if errors:
        raise EvaluationError("; ".join(f"[{name}] {msg}" for name, msg in errors.items()))
    rows, parts, items, judging = [], {}, [], {}
    for name in c.benchmarks:
        saved = json.loads((resume / f"bench-{name}.json").read_text())
        parts[f"eval:{name}"] = saved["seconds"]
        if saved.get("judging"):
            judging[name] = saved["judging"]  # the judge's URL, the model that answered, calls and failures
        if saved.get("items"):
            o = ItemOutcomes.from_json(saved["items"])
            items += [{"benchmark": name, "item": i, "kind": o.kind, "stats": s} for i, s in zip(o.ids, o.stats)]
        for r in saved["rows"]:
            rows.append({"benchmark": name, **r, "primary": r["metric"] == get(name).metric,
                         "backend": saved["backend"], "lmms_eval": saved.get("lmms_eval"),
                         "task": saved.get("task", get(name).task), "task_hash": saved["task_hash"],
                         "judge": saved["judge"], "items_over_context": saved.get("items_over_context", 0),
                         "subset": saved.get("subset")})
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    pd.DataFrame(items, columns=ITEM_COLUMNS).to_parquet(out / ITEMS, index=False)
    out_info: dict = {"parts": parts, "benchmarks_with_items": sorted({r["benchmark"] for r in items})}
    if judging:
        out_info["judging"] = judging
    return out_info

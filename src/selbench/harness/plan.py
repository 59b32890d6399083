"""Spec → stage graph. prepare → score (per selector; shared by budgets and seeds) → select (budget × seed) →
fine-tune → evaluate. The full-data reference (select-all → fine-tune → evaluate) is one shared cell; the spec's
sanity references (oracle / anti-oracle subsets, the untuned target) are cells after the selectors'.

Each job's config is a typed stage config (selbench.harness.contracts) whose canonical dump keys the job, together
with its upstream job ids and a fingerprint of the code it runs (``Job.code``, selbench.harness.codeprint): the
stage's source, and for score and select jobs the selector's — so changed code is re-run and unchanged code reused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selbench.harness import codeprint
from selbench.harness.contracts import (
    EvaluateConfig,
    FinetuneConfig,
    PrepareConfig,
    ScoreConfig,
    SelectConfig,
    StageConfig,
)
from selbench.harness.spec import RunSpec
from selbench.harness.store import Job, model_fingerprint
from selbench.leaderboard import REFERENCE, REFERENCE_BUDGET, UNTUNED, UNTUNED_BUDGET
from selbench.pool.world import TRUTH
from selbench.selectors.base import Budget
from selbench.selectors.registry import available, load_class


@dataclass
class Cell:
    selector: str  # display label
    budget: str
    seed: int
    jobs: dict[str, str] = field(default_factory=dict)  # stage → job id

    @property
    def identity(self) -> dict:
        return {"selector": self.selector, "budget": self.budget, "seed": self.seed}


@dataclass
class Plan:
    jobs: list[Job]
    cells: list[Cell]
    reference: Cell


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


def _required_metrics(spec: RunSpec) -> dict[str, list[str]]:
    """Per benchmark, the metrics the spec's columns read."""
    need: dict[str, set[str]] = {}
    for col in spec.columns:
        for src in col.sources:
            need.setdefault(src.benchmark, set()).add(src.metric)
    return {b: sorted(m) for b, m in sorted(need.items())}


def _sanity_cells(spec: RunSpec, add: Callable[..., Job], train_eval: Callable[[Job, Cell, int], None], prepare: Job,
                  eval_cfg: EvaluateConfig, target_id: str | None) -> list[Cell]:
    """The spec's sanity references, after the selectors: oracle / anti-oracle select jobs that read the world's
    ground truth (then fine-tuned and evaluated like any subset), and one evaluation of the untuned target."""
    cells = []
    for kind in spec.references:
        if kind == UNTUNED:
            given = {k: getattr(eval_cfg, k) for k in eval_cfg.model_fields_set}
            ev = add(EvaluateConfig(**given, model=str(spec.target), model_id=target_id), {},
                     {"selector": UNTUNED, "budget": UNTUNED_BUDGET, "seed": 0})
            cells.append(Cell(UNTUNED, UNTUNED_BUDGET, 0, {"evaluate": ev.id}))
            continue
        assert spec.world is not None  # the spec's validator: oracle and anti-oracle need the embedded world
        truth = str(spec.world.out / "pool" / TRUTH)
        for budget in spec.budgets:
            for seed in spec.seeds:
                cell = Cell(kind, Budget.parse(budget).label, seed)
                select = add(SelectConfig(selector=kind, budget=budget, seed=seed, truth=truth),
                             {"pool": prepare.id}, cell.identity)
                train_eval(select, cell, seed)
                cells.append(cell)
    return cells


def build_plan(spec: RunSpec) -> Plan:
    assert spec.pool is not None and spec.target is not None
    jobs: dict[str, Job] = {}

    def add(config: StageConfig, deps: dict[str, str] | None = None, cell: dict | None = None,
            selector: str | None = None) -> Job:
        """``selector``: the ``module:Class`` whose code a score or select job runs (None: no importable code)."""
        job = Job(config.stage, config.canonical(), deps or {}, cell or {},
                  code=codeprint.job_code(config.stage, selector))
        return jobs.setdefault(job.id, job)

    pinned = {k: str(v) for k in ("fingerprint", "reference_manifest") if (v := getattr(spec.pool, k))}
    prepare = add(PrepareConfig(pool=str(spec.pool.path), images=str(spec.pool.images) if spec.pool.images else None,
                                strict=spec.pool.strict, file=_file_id(spec.pool.path), **pinned))
    fingerprints = {w: model_fingerprint(getattr(spec, w)) for w in ("target", "proxy")}  # once per plan
    ev = spec.evaluation
    optional: dict[str, Any] = {}  # in the key only when given: other ids keep theirs
    if ev.generation:
        optional["generation"] = ev.generation
    if ev.task_data is not None:
        optional["task_data"] = str(ev.task_data)
    if ev.limit:
        optional.update(limit=dict(sorted(ev.limit.items())), limit_seed=ev.limit_seed)
    if ev.max_over_context != EvaluateConfig.model_fields["max_over_context"].default:
        optional["max_over_context"] = ev.max_over_context
    eval_cfg = EvaluateConfig(benchmarks=spec.benchmarks, backend=ev.backend, **optional,
                              bench_dir=str(spec.world.out / "benchmarks") if spec.world else None,
                              batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens, judge=ev.judge,
                              vllm_args=ev.vllm_args, outputs=2, required=_required_metrics(spec))

    def train_eval(select: Job, cell: Cell, seed: int) -> None:
        n = spec.executor.finetune_processes
        processes = {"processes": n} if n > 1 else {}  # in the key only then: single-process ids keep theirs
        ft_cfg = FinetuneConfig(recipe=spec.finetune.model_copy(update={"seed": seed}), target=str(spec.target),
                                target_id=fingerprints["target"], **processes)
        ft = add(ft_cfg, {"pool": prepare.id, "select": select.id}, cell.identity)
        evaluate = add(eval_cfg, {"model": ft.id}, cell.identity)
        cell.jobs.update(select=select.id, finetune=ft.id, evaluate=evaluate.id)

    ref = Cell(REFERENCE, REFERENCE_BUDGET, 0)
    train_eval(add(SelectConfig(selector=REFERENCE, budget=1.0, seed=0), {"pool": prepare.id}), ref, 0)
    cells = []
    registry = available()
    for sel in spec.selectors:
        revision = 1  # a selector whose results changed under the same config says so, so old scores are not reused
        source: str | None = None  # its module:Class, whose source files are part of its jobs' code fingerprint
        splits = False  # whether its score() runs as several ranks (executor.score_workers)
        if sel.image:  # lives only inside its image: nothing to import here; it may use the target and the proxy
            needs = frozenset({"target", "proxy"})
        else:
            if sel.impl is None and sel.name not in registry:
                raise ValueError(f"selector {sel.name!r}: not registered ({', '.join(sorted(registry))}) and no impl")
            source = sel.impl or registry[sel.name]
            cls = load_class(source)
            cls.Config(**sel.config)  # fail at plan time on a bad config, not an hour in
            needs = cls.needs
            revision = int(getattr(cls, "revision", 1))
            splits = bool(getattr(cls, "multi_process", False))
        # what the selector's code is, besides its source files (Job.code): a submission's image, as the spec names
        # it (a tag re-pushed with other code is not noticed; a digest pins it); its revision (only when > 1)
        code: dict[str, Any] = {"image": sel.image} if sel.image else {}
        if revision > 1:
            code["revision"] = revision
        models: dict[str, Any] = {}
        for which in ("target", "proxy"):
            if which in needs:
                path = getattr(spec, which)
                if path is None:
                    raise ValueError(f"selector {sel.name!r} needs a {which} model; the spec names none")
                models.update({which: str(path), f"{which}_id": fingerprints[which]})
        # in the key only when > 1, and only for a selector that splits its extraction (others run in one process)
        workers: dict[str, Any] = {"workers": n} if (n := spec.executor.score_workers) > 1 and splits else {}
        score = add(ScoreConfig(selector=sel.name, impl=sel.impl, config=sel.config, device=spec.device,
                                batch_size=spec.score_batch_size, **code, **models, **workers),
                    {"pool": prepare.id}, {"selector": sel.display}, source)
        for budget in spec.budgets:
            label = Budget.parse(budget).label
            for seed in spec.seeds:
                cell = Cell(sel.display, label, seed, {"score": score.id})
                select = add(SelectConfig(selector=sel.name, impl=sel.impl, config=sel.config, budget=budget,
                                          seed=seed, **code),
                             {"pool": prepare.id, "score": score.id}, cell.identity, source)
                train_eval(select, cell, seed)
                cells.append(cell)
    cells += _sanity_cells(spec, add, train_eval, prepare, eval_cfg, fingerprints["target"])
    for c in [ref, *cells]:
        c.jobs["prepare"] = prepare.id
    return Plan(list(jobs.values()), cells, ref)

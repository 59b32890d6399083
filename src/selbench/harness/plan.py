"""Spec → stage graph. prepare → score (per selector; shared by budgets and seeds) → select (budget × seed) →
fine-tune → evaluate. The full-data reference (select-all → fine-tune → evaluate) is one shared cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selbench.harness.spec import RunSpec
from selbench.harness.store import Job, model_fingerprint
from selbench.selectors.base import Budget
from selbench.selectors.registry import available, load_class

FULL = "full"


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


def build_plan(spec: RunSpec) -> Plan:
    assert spec.pool is not None and spec.target is not None
    jobs: dict[str, Job] = {}

    def add(job: Job) -> Job:
        jobs.setdefault(job.id, job)
        return job

    pool_cfg = {"pool": str(spec.pool.path), "images": str(spec.pool.images) if spec.pool.images else None,
                "strict": spec.pool.strict, "file": _file_id(spec.pool.path)}
    prepare = add(Job("prepare", pool_cfg))
    fingerprints = {w: model_fingerprint(getattr(spec, w)) for w in ("target", "proxy")}  # once per plan
    bench_dir = str(spec.world.out / "benchmarks") if spec.world else None
    eval_cfg = {"benchmarks": spec.benchmarks, "backend": spec.evaluation.backend, "bench_dir": bench_dir,
                "batch_size": spec.evaluation.batch_size, "max_new_tokens": spec.evaluation.max_new_tokens,
                "judge": spec.evaluation.judge, "vllm_args": spec.evaluation.vllm_args}

    def train_eval(select: Job, cell: Cell, seed: int) -> None:
        recipe = spec.finetune.model_copy(update={"seed": seed}).model_dump(mode="json")
        ft_cfg = {"recipe": recipe, "target": str(spec.target), "target_id": fingerprints["target"]}
        if spec.executor.finetune_processes > 1:  # in the key only then: single-process artifacts keep theirs
            ft_cfg["processes"] = spec.executor.finetune_processes
        ft = add(Job("finetune", ft_cfg, {"pool": prepare.id, "select": select.id}, cell.identity))
        ev = add(Job("evaluate", eval_cfg, {"model": ft.id}, cell.identity))
        cell.jobs.update(select=select.id, finetune=ft.id, evaluate=ev.id)

    ref = Cell(FULL, "100%", 0)
    train_eval(add(Job("select", {"selector": FULL, "budget": 1.0, "seed": 0}, {"pool": prepare.id})), ref, 0)
    cells = []
    registry = available()
    for sel in spec.selectors:
        if sel.image:  # lives only inside its image: nothing to import here; it may use the target and the proxy
            needs = frozenset({"target", "proxy"})
        else:
            if sel.impl is None and sel.name not in registry:
                raise ValueError(f"selector {sel.name!r}: not registered ({', '.join(sorted(registry))}) and no impl")
            cls = load_class(sel.impl or registry[sel.name])
            cls.Config(**sel.config)  # fail at plan time on a bad config, not an hour in
            needs = cls.needs
        score_cfg = {"selector": sel.name, "impl": sel.impl, "config": sel.config,
                     "device": spec.device, "batch_size": spec.score_batch_size}
        image = {"image": sel.image} if sel.image else {}  # a submission's image is part of what it is
        score_cfg.update(image)
        for which in ("target", "proxy"):
            if which in needs:
                path = getattr(spec, which)
                if path is None:
                    raise ValueError(f"selector {sel.name!r} needs a {which} model; the spec names none")
                score_cfg[which] = str(path)
                score_cfg[f"{which}_id"] = fingerprints[which]
        score = add(Job("score", score_cfg, {"pool": prepare.id}, {"selector": sel.display}))
        for budget in spec.budgets:
            label = Budget.parse(budget).label
            for seed in spec.seeds:
                cell = Cell(sel.display, label, seed, {"score": score.id})
                select = add(Job("select", {"selector": sel.name, "impl": sel.impl, "config": sel.config,
                                            "budget": budget, "seed": seed, **image},
                                 {"pool": prepare.id, "score": score.id}, cell.identity))
                train_eval(select, cell, seed)
                cells.append(cell)
    for c in [ref, *cells]:
        c.jobs["prepare"] = prepare.id
    return Plan(list(jobs.values()), cells, ref)

"""Typed contracts between the plan and the stages: one pydantic model per stage config, and the status words.

``build_plan`` builds each job's config as one of these models and stores its canonical dump in ``Job.config``
(the job key hashes it); each stage parses it back with ``XConfig.parse(job)`` (unknown keys are errors, so plan
and stage cannot drift apart). The canonical dump holds exactly the fields the plan *set* (pydantic's
``model_fields_set``), nested models in full: a field added later with a default leaves every existing job id
unchanged until a plan sets it — the same rule the optional ``processes`` and ``image`` fields always followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from selbench.evaluators.judge_config import Judge
from selbench.models.training import TrainConfig

Stage = Literal["prepare", "score", "select", "finetune", "evaluate"]
JobStatus = Literal["done", "cached", "failed", "blocked"]  # what an executor reports per job
StoreState = Literal["done", "failed", "running", "pending"]  # what `selbench status` reads from the store
FAILED: frozenset[str] = frozenset({"failed", "blocked"})  # a job that did not produce its outputs
SUCCEEDED: frozenset[str] = frozenset({"done", "cached"})  # a job whose outputs are in the store

C = TypeVar("C", bound="StageConfig")


@dataclass
class Outcome:
    """How a job ended, as an executor reports it."""

    status: JobStatus
    reason: str | None = None
    seconds: float = 0.0


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: ClassVar[Stage]

    def canonical(self) -> dict[str, Any]:
        """What the job stores and its key hashes: the fields the plan set (JSON types)."""
        return self.model_dump(mode="json", include=set(self.model_fields_set))

    @classmethod
    def parse(cls: type[C], job: Any) -> C:
        if job.stage != cls.stage:
            raise ValueError(f"job {job.id} is a {job.stage} job, not {cls.stage}")
        return cls.model_validate(job.config)


class PrepareConfig(StageConfig):
    stage: ClassVar[Stage] = "prepare"
    pool: str
    images: str | None
    strict: bool
    file: str  # path:size:mtime of the pool file, so an edited pool is a new job
    fingerprint: str | None = None  # a pinned pool (set only when the spec pins one)
    reference_manifest: str | None = None


class ScoreConfig(StageConfig):
    stage: ClassVar[Stage] = "score"
    selector: str
    impl: str | None  # "module:Class" for a selector outside the registry
    config: dict[str, Any]  # the selector's own config (validated by its Config class at plan time)
    device: str | None
    batch_size: int
    image: str | None = None  # a submitted selector's image (docker executor): part of what it is
    revision: int = 1  # the selector class's ``revision``; set (and so in the key) only when > 1
    target: str | None = None  # set only for selectors that need the model
    target_id: str | None = None
    proxy: str | None = None
    proxy_id: str | None = None
    # processes sharing the job's feature extraction (selbench.harness.stages.score; on GPUs rank r uses cuda:r). Set
    # (and so in the key) only when > 1: single-process ids stay as they were
    workers: int = Field(1, ge=1)

    def model_path(self, which: Literal["target", "proxy"]) -> Path | None:
        path = getattr(self, which)
        return Path(path) if path else None


class SelectConfig(StageConfig):
    stage: ClassVar[Stage] = "select"
    selector: str  # REFERENCE for the full-data reference (every row, no score job)
    budget: str | float | int
    seed: int
    impl: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    image: str | None = None
    revision: int = 1  # as ScoreConfig.revision
    truth: str | None = None  # a sanity reference's ground truth (the embedded world's pool/truth.json); set only then


class FinetuneConfig(StageConfig):
    stage: ClassVar[Stage] = "finetune"
    recipe: TrainConfig
    target: str
    target_id: str | None
    processes: int = Field(1, ge=1)  # set (and so in the key) only when > 1: single-process ids stay as they were
    # recipe fields added after recipes were first keyed: in the key only when they differ from their default, so
    # a new field at its default leaves every existing fine-tune id as it was
    LATER_RECIPE_FIELDS: ClassVar[tuple[str, ...]] = ("gradient_checkpointing", "save_dtype")

    def canonical(self) -> dict[str, Any]:
        out = super().canonical()
        for name in self.LATER_RECIPE_FIELDS:
            if out["recipe"].get(name) == TrainConfig.model_fields[name].default:
                del out["recipe"][name]
        return out


class EvaluateConfig(StageConfig):
    stage: ClassVar[Stage] = "evaluate"
    benchmarks: list[str]
    backend: Literal["hf", "lmms-eval-hf", "lmms-eval-vllm"]
    bench_dir: str | None  # the embedded benchmarks' data folder (None on the real path)
    batch_size: int
    max_new_tokens: int | None  # a cap for every task; None: each task's own generation settings
    generation: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-benchmark overrides (set when any)
    judge: Judge | None
    max_over_context: float = 0.01  # set by the plan only when not the default: other ids keep theirs
    limit: dict[str, int] = Field(default_factory=dict)  # seeded item subsets (set only when given)
    limit_seed: int = 0
    vllm_args: list[str]
    # 2: the job also writes items.parquet (per-item outcomes for the statistics); set by the plan, so it is in
    # the key and jobs written before it are redone rather than read without their items
    outputs: int = 1
    # benchmark → the metrics the protocol's columns read: these must be there and finite, others may be absent
    required: dict[str, list[str]] = Field(default_factory=dict)
    # local copies of the real benchmarks' data sets, laid out as the Hub (selbench.evaluators.task_data); None:
    # lmms-eval reads them from the Hub / its cache. Set by the plan only when given, so other job ids stay as they are
    task_data: str | None = None
    # a model folder evaluated as it is (the `untuned` reference: the target before instruction tuning) instead of
    # the upstream fine-tune's checkpoint, and its fingerprint; set only then
    model: str | None = None
    model_id: str | None = None


STAGE_CONFIGS: dict[str, type[StageConfig]] = {c.stage: c for c in (PrepareConfig, ScoreConfig, SelectConfig,
                                                                    FinetuneConfig, EvaluateConfig)}

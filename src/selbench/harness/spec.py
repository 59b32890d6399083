"""Run spec (YAML, validated; unknown keys are errors). Every shipped config begins with the command that runs it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selbench.evaluators.benchmarks import get as get_benchmark
from selbench.evaluators.benchmarks import task_for
from selbench.evaluators.judge_config import Judge
from selbench.evaluators.protocols import PROTOCOLS, Column, columns_for, get_protocol, resolve_benchmarks
from selbench.harness.store import stable_hash
from selbench.leaderboard import REFERENCE, SANITY
from selbench.models.launch import check_processes
from selbench.models.training import TrainConfig
from selbench.pool.world import NOISE
from selbench.selectors.base import Budget


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolSpec(Strict):
    path: Path
    images: Path | None = None
    strict: bool = False
    # a fixed pool: its fingerprint (`selbench pool check` prints it; 12+ hex digits) and, optionally, the fixed
    # pool's manifest, so a mismatch says how many rows and images differ. Checked before any GPU work.
    fingerprint: str | None = None
    reference_manifest: Path | None = None


class WorldSpec(Strict):
    """Generate (or reuse) the embedded world; pool/target/proxy default to its parts."""

    out: Path = Path("out/world")
    seed: int = 0
    samples: int = 3200
    bench_items: int = 200
    # share of pool turns whose label the generator flips (the benchmarks stay clean); the demo raises it so that
    # which rows are kept matters more than how many
    noise: float = Field(NOISE, ge=0, lt=1)


class SelectorSpec(Strict):
    name: str
    impl: str | None = None  # "module:Class" for a selector not in the registry (submissions, tests)
    config: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # shown on leaderboards; default: name
    image: str | None = None  # docker executor: the image its score/select jobs run in (a submitted selector)

    @property
    def display(self) -> str:
        return self.label or self.name


class EvalSpec(Strict):
    # lmms-eval-vllm: real runs (vLLM server + lmms-eval's openai model); lmms-eval-hf: lmms-eval with the HF
    # model (CPU, the demo); hf: the direct HF scorer for the embedded benchmarks (no lmms-eval start-up; tests).
    backend: Literal["hf", "lmms-eval-hf", "lmms-eval-vllm"] = "lmms-eval-hf"
    batch_size: int = 64
    # None: every task keeps its own generation settings (max_new_tokens, stop sequences, temperature: MM-Vet and
    # LLaVA-Bench expect long answers); an int caps max_new_tokens for every task
    max_new_tokens: int | None = None
    # per benchmark, explicit generation overrides, e.g. {mmvet: {max_new_tokens: 512}} (win over the cap)
    generation: dict[str, dict[str, int | float | bool | str]] = Field(default_factory=dict)
    # the judge of MM-Vet, LLaVA-Bench and MMBench's matcher: a model name (OpenAI's API, key in OPENAI_API_KEY) or
    # {model, base_url, api_key_env, max_failed, retries} for any OpenAI-compatible server (selbench.evaluators.judge)
    judge: Judge | None = None
    # share of a benchmark's items whose prompt may exceed the model's context (MMMU's many-image items): each answers
    # "" (scored by its task as such) and is counted (items_over_context in the results); beyond it the benchmark fails
    max_over_context: float = Field(default=0.01, ge=0.0, le=1.0)
    # a seeded item subset per benchmark, e.g. {vqav2: 5000} of VQAv2's 214K questions: part of the task's hash,
    # recorded in the results and shown in every table's caption — never an unrecorded truncation
    limit: dict[str, int] = Field(default_factory=dict)
    limit_seed: int = 0  # which items: the same for every checkpoint of the run (paired comparisons stay paired)
    vllm_args: list[str] = Field(default_factory=list)  # extra `vllm serve` flags, e.g. --tensor-parallel-size 2
    # a folder holding the real benchmarks' data sets at their Hub ids (ROOT/lmms-lab/MME/ …, as
    # `huggingface-cli download ID --repo-type dataset --local-dir ROOT/ID` lays them out): lmms-eval's own tasks
    # read them from there, offline (docs/real-benchmarks.md); relative to the spec's folder
    task_data: Path | None = None


class StatisticsSpec(Strict):
    """The paired bootstrap behind every CI, tie group and difference to random (recorded in the report)."""

    replicates: int = Field(default=1000, ge=100)
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)


class DisplaySpec(Strict):
    """Names the report's tables print (LaTeX, Markdown, CSV, HTML) instead of the run's own: selector (its label or
    name; ``full``: the reference row) → name, column key → name. Unset ones get selbench.reports.tables' defaults
    (random → Random, xmas → XMAS, emb_vqa → VQA; a protocol's columns keep the paper's names). Presentation only:
    not part of the spec hash."""

    selectors: dict[str, str] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict)
    pool: str | None = None  # the pool's name over the budgets (default: the pool file's stem, or the world)

    @field_validator("selectors", "columns")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        blank = sorted(k for k, name in v.items() if not name.strip())
        if blank:
            raise ValueError(f"empty display name for {', '.join(blank)}")
        return v


class ExecutorSpec(Strict):
    kind: Literal["local", "docker", "ray"] = "local"
    max_parallel: int = Field(default=1, ge=1)
    gpus: list[int] = Field(default_factory=list)  # device ids handed out through CUDA_VISIBLE_DEVICES
    # training processes per fine-tune job (accelerate launch: DDP or the recipe's DeepSpeed ZeRO stage); with
    # `gpus` each fine-tune job gets this many devices, on CPU they are gloo processes
    finetune_processes: int = Field(default=1, ge=1)
    # processes sharing each score job's feature extraction (every W-th shard each, merged in order: the same
    # features as one process); with `gpus` each score job gets this many devices (rank r: cuda:r)
    score_workers: int = Field(default=1, ge=1)
    timeout_s: dict[str, float] = Field(default_factory=lambda: {"score": 3600.0, "finetune": 7200.0,
                                                                 "evaluate": 3600.0, "prepare": 600.0})
    memory_limit_mb: int | None = None
    threads_per_job: int | None = None
    # local: start jobs by forking one warm worker per run that has imported torch / transformers / lmms-eval once
    # (selbench.harness.executors.warm) — on CPU runs without memory_limit_mb; false: a fresh interpreter per job
    warm_workers: bool = True
    image: str | None = None  # docker: the harness image every job runs in (docker/harness.Dockerfile)
    docker_host: str | None = None  # docker: daemon address (default: $DOCKER_HOST or the local socket)
    docker_network: str = "none"  # docker: network of non-selector jobs (selector jobs never get one)
    docker_mounts: list[Path] = Field(default_factory=list)  # docker: extra read-only host paths (same path inside)
    # docker: the Hugging Face cache (lmms-eval's data sets, tokenizers) for the harness's containers: mounted
    # read-write at the same path, HF_HOME, offline — selector containers never see it
    hf_home: Path | None = None
    # docker: limits every selector (score / select) container gets even when the ones above are unset — the code a
    # submission brings never runs unbounded (docs/containers.md)
    sandbox_memory_mb: int = Field(default=16384, ge=256)
    sandbox_cpus: float = Field(default=4.0, gt=0)
    sandbox_pids: int = Field(default=512, ge=32)
    sandbox_tmp_mb: int = Field(default=2048, ge=16)  # each of /tmp and /dev/shm (tmpfs, counted as memory)
    # extra environment for every job (all executors) — except, under Docker, selector containers: secrets such as a
    # judge's API key must not reach submitted code; they get ``sandbox_env`` only. A value "${NAME}" is the
    # harness's own variable NAME, read when jobs start: the secret itself stays out of the spec file
    env: dict[str, str] = Field(default_factory=dict)
    sandbox_env: dict[str, str] = Field(default_factory=dict)
    ray_address: str | None = None

    def job_env(self) -> dict[str, str]:
        """``env`` with every "${NAME}" value taken from the harness's environment (an error naming it if unset)."""
        out = {}
        for key, value in self.env.items():
            ref = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value)
            if ref and ref[1] not in os.environ:
                raise ValueError(f"executor.env.{key} = {value}: the variable {ref[1]} is not set in the "
                                 f"harness's environment")
            out[key] = os.environ[ref[1]] if ref else value
        return out


class RunSpec(Strict):
    name: str
    world: WorldSpec | None = None
    pool: PoolSpec | None = None
    target: Path | None = None
    proxy: Path | None = None
    selectors: list[SelectorSpec]
    budgets: list[str | float | int]
    seeds: list[int] = Field(default_factory=lambda: [0])
    # Sanity references run beside the selectors and shown as such (never ranked with them): `oracle` and
    # `anti-oracle` subsets from the embedded world's ground truth (every budget × seed; need `world`), and
    # `untuned`: the target evaluated without instruction tuning (one row, budget 0%).
    references: list[Literal["oracle", "anti-oracle", "untuned"]] = Field(default_factory=list)
    finetune: TrainConfig = Field(default_factory=TrainConfig)
    # A protocol (embedded_v1, xmas_v1, scalselect_v1, coincide_v1: the papers' column lists) — its benchmarks are
    # evaluated and its columns make the leaderboard; or a benchmark list (one column each, its primary metric).
    # `benchmarks: xmas_v1` alone is read as `protocol: xmas_v1`. Names are resolved and checked at load.
    protocol: str | None = None
    benchmarks: list[str] = Field(default_factory=list)
    evaluation: EvalSpec = Field(default_factory=EvalSpec)
    statistics: StatisticsSpec = Field(default_factory=StatisticsSpec)
    display: DisplaySpec = Field(default_factory=DisplaySpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    store: Path = Path("runs/store")
    device: str | None = None
    score_batch_size: int = 32

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list) -> list:
        labels = [Budget.parse(b).label for b in v]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"budgets {v} name the same subset twice ({', '.join(twice)})")
        if not v:
            raise ValueError("budgets: the spec names none")
        return v

    @model_validator(mode="before")
    @classmethod
    def _protocol_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("protocol") is None:
            b = data.get("benchmarks")
            name = b if isinstance(b, str) else b[0] if isinstance(b, list) and len(b) == 1 else None
            if isinstance(name, str) and name in PROTOCOLS:
                data = {**data, "protocol": name, "benchmarks": []}
        return data

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _benchmarks(cls, v: Any) -> list[str]:
        return resolve_benchmarks([v] if isinstance(v, str) else v)

    @model_validator(mode="after")
    def _columns(self) -> "RunSpec":
        if self.protocol is None:
            if not self.benchmarks:
                raise ValueError("a spec names a `protocol` or its `benchmarks`")
            self._check_evaluation(self.benchmarks)
            self._check_judge(self.benchmarks)
            return self
        self._check_evaluation(get_protocol(self.protocol).benchmarks)
        needed = get_protocol(self.protocol).benchmarks
        if not self.benchmarks:
            self.benchmarks = needed
        elif sorted(self.benchmarks) != sorted(needed):
            raise ValueError(f"protocol {self.protocol} evaluates {', '.join(needed)}; `benchmarks` lists "
                             f"{', '.join(self.benchmarks)} (leave `benchmarks` out)")
        self._check_judge(needed)
        return self

    def _check_judge(self, benchmarks: list[str]) -> None:
        """A benchmark that cannot be scored without a judge fails every evaluate job, after every fine-tune has
        run: refuse the spec now instead."""
        problems = []
        for name in benchmarks:
            try:
                task_for(get_benchmark(name), self.evaluation.judge)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            raise ValueError("evaluation.judge is not set, and every evaluation would fail: " + "; ".join(problems))

    def _check_evaluation(self, benchmarks: list[str]) -> None:
        for field in ("generation", "limit"):
            unknown = sorted(set(getattr(self.evaluation, field)) - set(benchmarks))
            if unknown:
                raise ValueError(f"evaluation.{field} names {', '.join(unknown)}, not a benchmark of this spec "
                                 f"({', '.join(benchmarks)})")
        for name, n in sorted(self.evaluation.limit.items()):
            if n < 1:
                raise ValueError(f"evaluation.limit.{name}: {n} items; a subset needs at least one")
            if (why := get_benchmark(name).no_subset) is not None:
                raise ValueError(f"evaluation.limit.{name}: a subset of {name} would not measure it: {why}")

    @property
    def columns(self) -> list[Column]:
        """The leaderboard's columns: the protocol's, or one per benchmark."""
        return columns_for(self.protocol, self.benchmarks)

    @model_validator(mode="after")
    def _sources(self) -> "RunSpec":
        if self.world is None and (self.pool is None or self.target is None):
            raise ValueError("a spec needs either `world` (embedded) or both `pool` and `target`")
        ex = self.executor
        if ex.gpus and ex.score_workers > len(ex.gpus):
            raise ValueError(f"executor.score_workers {ex.score_workers} needs that many devices; "
                             f"executor.gpus lists {len(ex.gpus)}")
        if ex.gpus and ex.finetune_processes > len(ex.gpus):
            raise ValueError(f"executor.finetune_processes {ex.finetune_processes} needs that many devices; "
                             f"executor.gpus lists {len(ex.gpus)}")
        check_processes(self.finetune, ex.finetune_processes)
        if self.world is not None:  # the pool size is known: budgets that resolve to one count are one subset
            counts = [Budget.parse(b).resolve(self.world.samples) for b in self.budgets]
            same = sorted({str(b) for b, c in zip(self.budgets, counts) if counts.count(c) > 1})
            if same:
                raise ValueError(f"budgets {', '.join(same)} resolve to the same number of samples "
                                 f"({self.world.samples}-sample pool)")
        labels = [s.display for s in self.selectors]
        if len(set(labels)) != len(labels):
            raise ValueError(f"selector labels must be unique: {labels}")
        if REFERENCE in labels or any(s.name == REFERENCE for s in self.selectors):
            raise ValueError(f"{REFERENCE!r} is reserved for the full-data reference; name or label the selector "
                             "otherwise")
        taken = sorted(set(SANITY) & {n for s in self.selectors for n in (s.display, s.name)})
        if taken:
            raise ValueError(f"{', '.join(map(repr, taken))}: reserved for the sanity references (spec "
                             "`references`); name or label the selector otherwise")
        if len(set(self.references)) != len(self.references):
            raise ValueError(f"references {self.references} name one twice")
        needs_world = [r for r in self.references if r != "untuned"]
        if needs_world and self.world is None:
            raise ValueError(f"references {', '.join(needs_world)} are chosen with the embedded world's ground "
                             "truth: the spec needs `world` (only `untuned` runs on any pool)")
        self._check_display()
        return self

    def _check_display(self) -> None:
        """display names only what the spec has (a typo would silently print the raw name), each name once."""
        known = list(dict.fromkeys([*(n for s in self.selectors for n in (s.display, s.name)), REFERENCE,
                                    *self.references]))
        unknown = sorted(set(self.display.selectors) - set(known))
        if unknown:
            raise ValueError(f"display.selectors names {', '.join(unknown)}, not a selector of this spec "
                             f"({', '.join(known)})")
        keys = [c.key for c in self.columns]
        unknown = sorted(set(self.display.columns) - set(keys))
        if unknown:
            raise ValueError(f"display.columns names {', '.join(unknown)}, not a column of this spec "
                             f"({', '.join(keys)})")
        for what, names in (("selectors", self.display.selectors), ("columns", self.display.columns)):
            shown = list(names.values())
            twice = sorted({n for n in shown if shown.count(n) > 1})
            if twice:
                raise ValueError(f"display.{what}: {', '.join(twice)} given to more than one")

    REDACTED: ClassVar[str] = "<redacted>"

    def recorded(self) -> dict[str, Any]:
        """The spec as runs record it (``spec.json``, the nightly history, the fingerprint): the executor's
        environment variables by name only — their values (a judge's API key) never reach a file."""
        out = self.model_dump(mode="json")
        for field in ("env", "sandbox_env"):
            out["executor"][field] = {name: self.REDACTED for name in out["executor"][field]}
        # fields added later are recorded only away from their default, so a spec that does not use them keeps
        # its hash and the nightly sees no change; warm_workers never (it changes how jobs start, not results)
        if not out["references"]:
            del out["references"]
        if out["world"] is not None and out["world"]["noise"] == NOISE:
            del out["world"]["noise"]
        del out["executor"]["warm_workers"]
        return out

    def fingerprint(self) -> str:
        """The spec's hash as results, reports and the nightly history record it (of ``recorded``: a rotated key
        is not a spec change)."""
        return stable_hash({k: v for k, v in self.recorded().items() if k != "display"})  # names: presentation

    def resolved(self, base: Path) -> "RunSpec":
        """Fill pool/target/proxy from the world; make relative paths absolute against ``base``."""
        upd: dict[str, Any] = {}
        if self.world is not None:
            w = self.world.out if self.world.out.is_absolute() else base / self.world.out
            upd["world"] = self.world.model_copy(update={"out": w})
            upd["pool"] = self.pool or PoolSpec(path=w / "pool" / "pool.json", images=w / "pool")
            upd["target"] = self.target or w / "models" / "target"
            upd["proxy"] = self.proxy or w / "models" / "proxy"
        spec = self.model_copy(update=upd)
        assert spec.pool is not None  # the validator requires a world or a pool
        absolute = lambda p: None if p is None else (p if p.is_absolute() else base / p)  # noqa: E731
        pool = spec.pool.model_copy(update={"path": absolute(spec.pool.path), "images": absolute(spec.pool.images)})
        evaluation = spec.evaluation.model_copy(update={"task_data": absolute(spec.evaluation.task_data)})
        return spec.model_copy(update={"pool": pool, "target": absolute(spec.target), "evaluation": evaluation,
                                       "proxy": absolute(spec.proxy), "store": absolute(spec.store)})


def load_spec(path: str | Path) -> RunSpec:
    """The spec at ``path``; any problem is a ValueError naming the file and, per problem, the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"run spec not found: {path}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable YAML file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run spec is a YAML mapping")
    try:
        return RunSpec(**data)
    except ValidationError as e:
        raise ValueError(f"{path}: " + "; ".join(_problem(err) for err in e.errors())) from None
    except Exception as e:
        raise ValueError(f"{path}: {e}") from e


def _problem(err: Any) -> str:
    """One pydantic error as `field.path: message (got value)`, on one line."""
    where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    return f"{where}: {msg}" + ("" if err.get("type") == "value_error" else f" (got {got})")

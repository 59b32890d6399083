"""Fixtures for evaluation tests: the small run's full-data reference checkpoint and a way to run the evaluate stage
on it in-process (the same function the job entrypoint calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selbench.harness.stages import evaluate
from selbench.harness.store import Job, Store


@pytest.fixture(scope="module")
def reference(small_run: dict) -> tuple[Path, str, Path]:
    """(store root, finetune job id, benchmark folder) of the small run's full-data reference."""
    from selbench.harness.plan import build_plan
    from selbench.harness.runner import prepare_spec

    spec = prepare_spec(small_run["spec_path"])
    return spec.store, build_plan(spec).reference.jobs["finetune"], spec.world.out / "benchmarks"


def stage_store(tmp_path: Path, reference: tuple[Path, str, Path]) -> Store:
    store = Store(tmp_path / "store")
    src_root, ft, _ = reference
    (store.root / "jobs" / ft).symlink_to(src_root / "jobs" / ft)
    return store


def run_stage(store: Store, ft: str, backend: str, benchmarks: list[str], bench_dir: Path, **extra) -> tuple[Job, list]:
    cfg = {"benchmarks": benchmarks, "backend": backend, "bench_dir": str(bench_dir), "batch_size": 64,
           "max_new_tokens": 4, "judge": None, "vllm_args": [], **extra}
    job = Job("evaluate", cfg, {"model": ft})
    out = store.staging(job.id)
    evaluate.run(job, store, out)
    return job, json.loads((out / "results.json").read_text())


def predictions(store: Store, job: Job, name: str) -> list[str]:
    return json.loads((store.root / "resume" / job.id / f"bench-{name}.json").read_text())["predictions"]


def item_outcomes(store: Store, job: Job, name: str) -> dict:
    return json.loads((store.root / "resume" / job.id / f"bench-{name}.json").read_text())["items"]


@pytest.fixture(scope="session")
def judge_process(tmp_path_factory):
    """A tiny scripted judge (tests/evaluators/judge_model.py) served by the CPU vLLM, started and not waited for:
    it comes up while the small run builds. One per session: the judge test and the vLLM rehearsal share it."""
    from tests.evaluators.judge_model import SERVED, build_judge

    from selbench.evaluators.vllm_server import VLLMServer

    model = build_judge(tmp_path_factory.mktemp("judge") / "model")
    server = VLLMServer(model, model.parent / "vllm.log", extra_args=["--enforce-eager"], served_name=SERVED)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def judge_server(judge_process, small_run):
    return judge_process.wait_ready()


def judge_config(server) -> dict:
    """``evaluation.judge`` for the served tiny judge (its key in KEY_ENV, which the caller sets)."""
    from tests.evaluators.judge_model import KEY_ENV, SERVED

    return {"model": SERVED, "base_url": server.base_url, "api_key_env": KEY_ENV}

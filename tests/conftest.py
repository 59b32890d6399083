"""Shared fixtures: a small embedded world (built once per session, cached across sessions under .cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SELBENCH_NO_PROGRESS", "1")
REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SELBENCH_TEST_CACHE", REPO / ".cache" / "tests"))


@pytest.fixture(scope="session")
def small_world() -> Path:
    """400-sample pool, 40-item benchmarks, tiny models: for selector/harness tests. Built with the stage 1 a run's
    ``world:`` builds (the default): with a shorter one, the first run on this world trained its models again and each
    worker's first use of the fixture trained them back — while tests on the other xdist worker read them."""
    from selbench.embedded import build_world

    return build_world(CACHE / "small-world-v1", seed=3, n_samples=400, n_bench=40, log=lambda m: None)


@pytest.fixture(scope="session")
def small_pool(small_world: Path):
    from selbench.pool.manifest import manifest_from_pool

    manifest, report = manifest_from_pool(small_world / "pool" / "pool.json")
    assert not report.issues
    return manifest


SMALL_RUN_SELECTORS = [
    {"name": "random", "label": "picker"},
    {"name": "length"},
    {"name": "perplexity", "label": "<script>alert(1)</script>"},  # a hostile display name, for the report
]


def small_run_spec(world: Path, store: Path, selectors: list[dict] = SMALL_RUN_SELECTORS) -> dict:
    """Three selectors × two budgets + the reference on the small world; 4 epochs at lr 1e-3 so the reference
    scores above zero on every benchmark of the run (ARP is defined). emb_pope is left out: on this 400-sample
    world the reference answers "no" throughout (F1 0, so every relative score and ARP would be N/A, by
    definition); the learning test and the evaluator tests cover emb_pope on the full world."""
    return {
        "name": "small", "world": {"out": str(world), "seed": 3, "samples": 400, "bench_items": 40},
        "selectors": selectors, "budgets": [0.25, 0.5], "seeds": [0],
        "finetune": {"method": "full", "lr": 1e-3, "projector_lr": None, "epochs": 4, "batch_size": 8},
        "benchmarks": ["emb_vqa", "emb_mc", "emb_count", "emb_ocr"],
        "evaluation": {"backend": "hf", "batch_size": 64, "max_new_tokens": 4},
        "executor": {"kind": "local", "max_parallel": 2, "threads_per_job": 1},
        "store": str(store),
    }


@pytest.fixture(scope="session")
def small_run(small_world: Path, tmp_path_factory) -> dict:
    """A finished harness run (about 2 minutes on 2 cores) with its report; tests copy it before changing it."""
    import yaml

    from selbench.harness import runner
    from selbench.reports import build_report

    root = tmp_path_factory.mktemp("small-run")
    spec = small_run_spec(small_world, root / "store")
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.run(path)
    assert {o.status for o in result.statuses.values()} == {"done"}, result.statuses
    build_report(result.out)  # the report is the caller's step (the CLI's after every run)
    return {"root": root, "spec": spec, "spec_path": path, "run_dir": result.out, "board": result.board}


# `make test` runs the suite on two xdist workers (`-n 2 --dist loadfile`): each test file runs on one worker, so its
# module fixtures are built once. Session fixtures exist once per worker that needs them (the cached worlds are built
# once: build_world locks the folder). The long files go first, so that neither worker is left with one at the end
# (seconds on a fresh 2-core clone, README › Tests and benchmarks). (`--dist loadgroup` would let files share a worker,
# but xdist 3.8 cannot set its group ids on pytest 9's nodes.)
LONG_FIRST = [
    "tests/harness/test_docker.py",         # ~800 s: dockerd, debootstrap, the image build, runs in containers
    "tests/models/test_learning.py",        # ~150 s: the full pool, 2 epochs, on the worker's one thread
    "tests/evaluators/test_judge.py",       # ~200 s: the judge's vLLM server
    "tests/evaluators/test_real_tasks.py",  # ~250 s: both rehearsals (and the judge, when on the other worker)
    "tests/harness/test_run.py",            # ~350 s
    "tests/harness/test_ray.py",            # ~210 s: a local cluster of two nodes
]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One torch thread per worker: two workers with torch's default (a thread per core) oversubscribe the two
        # cores, and the full-pool learning test then took 921 s instead of ~350 s.
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda it: rank.get(it.nodeid.split("::", 1)[0], len(rank)))  # stable: order within a file kept

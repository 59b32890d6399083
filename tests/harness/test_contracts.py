"""Typed stage contracts: the demo plan's job ids are what they were before the configs were typed, every job's
config parses back into its stage's model, and a config that drifts from its model is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selbench.harness.contracts import STAGE_CONFIGS, FinetuneConfig, ScoreConfig, SelectConfig
from selbench.harness.store import Job

from tests.harness.plan_inputs import BASE, demo_plan_ids, demo_spec_path

GOLDEN = Path(__file__).parent / "golden" / "demo_plan_ids.json"


def test_demo_plan_job_ids_are_unchanged() -> None:
    # The golden ids were computed by the untyped plan (dict configs) before the stage configs existed, and
    # regenerated since only on purpose: XMAS and COINCIDE went to revision 2 (their results changed under the
    # same config), which moved their score/select/fine-tune/evaluate ids and no others; every evaluate job moved
    # when it began writing per-item outcomes and checking the metrics its columns read (EvaluateConfig.outputs,
    # .required); every id moved once more when the package version left the key for a fingerprint of the code
    # each job runs (Job.code, issue #15). That fingerprint changes with any edit to the source, so these ids are
    # computed with it held at a neutral value (plan_inputs.neutral_code): they pin what the spec and the stage
    # configs put into a key, and an ordinary code change does not touch them — that code moves ids is checked in
    # test_code_identity.py. A change meant to move ids regenerates them (`python tests/harness/plan_inputs.py`)
    # and says why in its commit. When the demo spec itself changed (3 seeds, budgets 10/20 %, sanity references,
    # issue #14) the file was regenerated after checking that every cell in both plans kept all its job ids.
    assert demo_plan_ids() == json.loads(GOLDEN.read_text())


def test_every_job_config_round_trips_through_its_model() -> None:
    from selbench.harness.plan import build_plan
    from selbench.harness.spec import load_spec

    plan = build_plan(load_spec(demo_spec_path()).resolved(BASE))
    assert {j.stage for j in plan.jobs} == set(STAGE_CONFIGS)
    for job in plan.jobs:
        cfg = STAGE_CONFIGS[job.stage].parse(job)
        assert cfg.canonical() == job.config  # what the stage reads is exactly what was keyed
    ft = next(j for j in plan.jobs if j.stage == "finetune")
    assert FinetuneConfig.parse(ft).recipe.epochs == 2 and FinetuneConfig.parse(ft).processes == 1


def test_drift_between_plan_and_stage_is_an_error() -> None:
    job = Job("score", {"selector": "random", "impl": None, "config": {}, "device": None, "batch_size": 32,
                        "batch": 8})
    with pytest.raises(ValueError, match="batch\n"):
        ScoreConfig.parse(job)
    with pytest.raises(ValueError, match="not select"):
        SelectConfig.parse(job)


def test_unset_fields_stay_out_of_the_key() -> None:
    # a field the plan did not set is not in the canonical dump, so adding fields with defaults keeps old ids
    ref = SelectConfig(selector="full", budget=1.0, seed=0)
    assert ref.canonical() == {"selector": "full", "budget": 1.0, "seed": 0}
    sel = SelectConfig(selector="random", impl=None, config={}, budget="10%", seed=1)
    assert sel.canonical() == {"selector": "random", "impl": None, "config": {}, "budget": "10%", "seed": 1}
    assert SelectConfig.model_validate(sel.canonical()).canonical() == sel.canonical()


def test_a_selector_revision_moves_its_jobs_and_no_others(monkeypatch) -> None:
    from selbench.selectors.xmas import XmasSelector

    before = demo_plan_ids()["cells"]
    monkeypatch.setattr(XmasSelector, "revision", XmasSelector.revision + 1)
    after = demo_plan_ids()["cells"]
    moved = {cell for cell in before if before[cell] != after[cell]}
    assert moved == {cell for cell in before if cell.startswith("xmas|")} and len(moved) == 6  # 2 budgets × 3 seeds
    prepare = lambda ids: [j for j in ids if j.startswith("prepare-")]  # noqa: E731
    assert all(prepare(before[c]) == prepare(after[c]) for c in moved)


def test_later_recipe_fields_enter_the_key_only_when_set_away_from_their_default() -> None:
    from selbench.models.training import TrainConfig

    def cfg(**recipe) -> dict:
        return FinetuneConfig(recipe=TrainConfig(**recipe), target="t", target_id=None).canonical()

    assert "gradient_checkpointing" not in cfg()["recipe"] and "save_dtype" not in cfg()["recipe"]
    assert cfg(gradient_checkpointing=None) == cfg()  # its default, even when written out
    assert cfg(gradient_checkpointing=True)["recipe"]["gradient_checkpointing"] is True
    assert cfg(save_dtype="bfloat16")["recipe"]["save_dtype"] == "bfloat16"
    assert FinetuneConfig.model_validate(cfg()).recipe.save_dtype == "auto"  # parses back with the default


def test_score_workers_reach_the_score_jobs_and_their_devices(tmp_path: Path) -> None:
    """``executor.score_workers``: each score job's config (``workers``, in its key only when > 1) and the devices
    the executor hands it; the other stages keep theirs."""
    from selbench.harness.executors.local import LocalExecutor
    from selbench.harness.plan import build_plan
    from selbench.harness.spec import load_spec
    from selbench.harness.store import Store

    spec = load_spec(demo_spec_path()).resolved(BASE)
    one = build_plan(spec)
    two_spec = spec.model_copy(update={"executor": spec.executor.model_copy(update={"score_workers": 2})})
    two = build_plan(two_spec)
    scores = [j for j in two.jobs if j.stage == "score"]
    splitting = {"perplexity", "coincide", "prism", "xmas", "scalselect"}  # their score() runs as ranks
    assert {ScoreConfig.parse(j).selector: ScoreConfig.parse(j).workers for j in scores} == {
        s: (2 if s in splitting else 1) for s in ("random", "length", *splitting)}
    one_process = {j.id for j in scores if ScoreConfig.parse(j).selector in ("random", "length")}
    assert one_process == {j.id for j in one.jobs if j.stage == "score" and ScoreConfig.parse(j).selector in
                           ("random", "length")}  # no split: their jobs and their caches stay as they were
    scores = [j for j in scores if ScoreConfig.parse(j).selector in splitting]
    assert {j.id for j in one.jobs if j.stage == "score"}.isdisjoint(j.id for j in scores)
    assert {j.id for j in one.jobs if j.stage == "prepare"} == {j.id for j in two.jobs if j.stage == "prepare"}
    ex = LocalExecutor(two_spec.executor, Store(tmp_path / "store"))
    assert ex.devices_needed(scores[0]) == 2
    assert ex.devices_needed(next(j for j in two.jobs if j.stage == "score" and j.id in one_process)) == 1
    assert ex.devices_needed(next(j for j in two.jobs if j.stage == "evaluate")) == 1

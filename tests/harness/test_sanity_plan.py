"""Sanity references in a spec and its plan: oracle / anti-oracle subsets from the world's ground truth (every budget ×
seed, fine-tuned and evaluated like a selector's) and one evaluation of the untuned target."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from selbench.harness.contracts import EvaluateConfig, SelectConfig
from selbench.harness.plan import build_plan
from selbench.harness.spec import RunSpec, load_spec
from tests.harness.plan_inputs import BASE, demo_spec_path


def _spec(**extra) -> dict:
    return {"name": "t", "world": {"out": "w"}, "selectors": [{"name": "random"}], "budgets": [0.1],
            "benchmarks": ["emb_vqa"], **extra}


def test_the_demo_plans_its_sanity_references() -> None:
    spec = load_spec(demo_spec_path()).resolved(BASE)
    plan = build_plan(spec)
    by_id = {j.id: j for j in plan.jobs}
    sanity = [c for c in plan.cells if c.selector in ("oracle", "anti-oracle", "untuned")]
    assert {(c.selector, c.budget, c.seed) for c in sanity} == {
        *((k, b, s) for k in ("oracle", "anti-oracle") for b in ("10%", "20%") for s in (0, 1, 2)),
        ("untuned", "0%", 0)}
    assert plan.cells[-len(sanity):] == sanity  # after the selectors
    for cell in sanity:
        if cell.selector == "untuned":
            assert set(cell.jobs) == {"evaluate", "prepare"}
            ev = EvaluateConfig.parse(by_id[cell.jobs["evaluate"]])
            assert ev.model == str(spec.target) and ev.model_id and by_id[cell.jobs["evaluate"]].deps == {}
            continue
        select = SelectConfig.parse(by_id[cell.jobs["select"]])
        assert select.selector == cell.selector and select.truth == str(BASE / "out/world/pool/truth.json")
        assert "score" not in cell.jobs and by_id[cell.jobs["finetune"]].deps["select"] == cell.jobs["select"]
    # the selectors' evaluations do not name a model: their keys are as before
    assert all(EvaluateConfig.parse(j).model is None for j in plan.jobs
               if j.stage == "evaluate" and j.cell.get("selector") != "untuned")


def test_reserved_labels_and_missing_world_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'oracle': reserved for the sanity references"):
        RunSpec.model_validate(_spec(selectors=[{"name": "random", "label": "oracle"}]))
    with pytest.raises(ValueError, match="'untuned': reserved"):
        RunSpec.model_validate(_spec(selectors=[{"name": "untuned", "impl": "x:Y"}]))
    with pytest.raises(ValueError, match="references oracle are chosen with the embedded world's ground truth"):
        RunSpec.model_validate({**_spec(references=["oracle", "untuned"]), "world": None, "pool": {"path": "p.json"},
                                "target": "t"})
    RunSpec.model_validate({**_spec(references=["untuned"]), "world": None, "pool": {"path": "p.json"}, "target": "t"})
    with pytest.raises(ValueError, match="references"):
        RunSpec.model_validate(_spec(references=["genie"]))
    with pytest.raises(ValueError, match="name one twice"):
        RunSpec.model_validate(_spec(references=["oracle", "oracle"]))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_spec(references=["oracle"], display={"selectors": {
        "oracle": "Oracle (ground truth)"}})))
    assert load_spec(tmp_path / "s.yaml").display.selectors == {"oracle": "Oracle (ground truth)"}


def test_later_spec_fields_leave_the_spec_hash_alone() -> None:
    """`references` is recorded (and hashed) only when given; `executor.warm_workers` never (how jobs start is not
    what they compute): a spec that uses neither keeps its hash, so the nightly sees no change."""
    plain = RunSpec.model_validate(_spec())
    assert "references" not in plain.recorded() and "warm_workers" not in plain.recorded()["executor"]
    cold = RunSpec.model_validate(_spec(executor={"warm_workers": False}))
    assert cold.fingerprint() == plain.fingerprint()
    with_refs = RunSpec.model_validate(_spec(references=["oracle"]))
    assert with_refs.recorded()["references"] == ["oracle"] and with_refs.fingerprint() != plain.fingerprint()
    # world.noise (added later) likewise: recorded only away from the generator's default
    assert "noise" not in plain.recorded()["world"]
    assert RunSpec.model_validate(_spec(world={"out": "w", "noise": 0.06})).fingerprint() == plain.fingerprint()
    noisy = RunSpec.model_validate(_spec(world={"out": "w", "noise": 0.3}))
    assert noisy.recorded()["world"]["noise"] == 0.3 and noisy.fingerprint() != plain.fingerprint()

"""Every shipped config validates, names known selectors and benchmarks, and starts with its own command."""

from pathlib import Path

import pytest

from selbench.evaluators.benchmarks import REGISTRY
from selbench.harness.spec import load_spec
from selbench.selectors.registry import available, instantiate

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "llava665k-lora.yaml", "llava-v625k-scalselect.yaml",
                                         "visionflan.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# selbench run configs/" + path.name) or "make demo" in first, first
    spec = load_spec(path)
    assert set(spec.benchmarks) <= set(REGISTRY) and spec.protocol is not None  # every shipped config: a paper's
    for sel in spec.selectors:
        assert sel.impl or sel.name in available()
        instantiate(sel.name, sel.impl, sel.config)  # the selector's own config validates too


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(text + "learning_rate: 3\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_spec(tmp_path / "bad.yaml")


def _spec(world: Path = Path("w"), **executor) -> dict:
    return {"name": "t", "world": {"out": str(world)}, "selectors": [{"name": "random"}], "budgets": [0.1],
            "benchmarks": ["emb_vqa"], "finetune": {"batch_size": 8}, "executor": executor}


def test_multi_process_fine_tune_is_validated_and_keyed(small_world: Path) -> None:
    from selbench.harness.plan import build_plan
    from selbench.harness.spec import RunSpec

    with pytest.raises(ValueError, match="finetune_processes 4 needs that many devices; executor.gpus lists 2"):
        RunSpec(**_spec(gpus=[0, 1], finetune_processes=4))
    with pytest.raises(ValueError, match=r"batch_size 8 is the global micro-batch.*finetune_processes \(3\)"):
        RunSpec(**_spec(finetune_processes=3))
    one = build_plan(RunSpec(**_spec(small_world)).resolved(small_world))
    two = build_plan(RunSpec(**_spec(small_world, finetune_processes=2)).resolved(small_world))
    ft = lambda plan: [j for j in plan.jobs if j.stage == "finetune"]  # noqa: E731
    assert all("processes" not in j.config for j in ft(one))  # single-process keys are unchanged
    assert all(j.config["processes"] == 2 for j in ft(two))
    assert {j.id for j in ft(one)}.isdisjoint(j.id for j in ft(two))


@pytest.mark.parametrize("name", ["llava665k-lora.yaml", "llava-v625k-scalselect.yaml", "visionflan.yaml"])
def test_real_protocols_train_on_eight_gpus_with_zero3(name: str) -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "configs" / name)
    assert spec.executor.finetune_processes == 8 and spec.finetune.deepspeed == "zero3"
    assert spec.finetune.gradient_checkpointing and spec.finetune.bf16  # the 7B step fits only so
    assert spec.finetune.batch_size == 128  # LLaVA-1.5's global batch: 16 per device × 8 GPUs


def test_protocols_benchmarks_and_typos_are_resolved_at_load() -> None:
    from selbench.evaluators.protocols import get_protocol
    from selbench.harness.spec import RunSpec

    embedded = get_protocol("embedded_v1").benchmarks
    for named in ({"benchmarks": "embedded_v1"}, {"benchmarks": ["embedded_v1"]}, {"protocol": "embedded_v1"}):
        spec = RunSpec(**{**_spec(), "benchmarks": [], **named})
        assert spec.protocol == "embedded_v1" and spec.benchmarks == embedded
    xmas = RunSpec(**{**_spec(), "benchmarks": [], "protocol": "xmas_v1", "evaluation": {"judge": "gpt-4-0613"}})
    assert xmas.benchmarks == get_protocol("xmas_v1").benchmarks and len(xmas.columns) == 10
    # MMBench-En has a judge-free variant, so it needs no judge (MMBench-Cn does: tests/harness/test_spec_bad_input.py)
    assert RunSpec(**{**_spec(), "benchmarks": ["mmbench_en", "gqa"]}).evaluation.judge is None
    with pytest.raises(ValueError, match=r"unknown benchmark 'emb_vqaa' \(did you mean emb_vqa.*protocols: .*xmas_v1"):
        RunSpec(**{**_spec(), "benchmarks": ["emb_vqaa"]})
    with pytest.raises(ValueError, match="emb_vqa named more than once"):
        RunSpec(**{**_spec(), "benchmarks": ["embedded_v1", "emb_vqa"]})
    with pytest.raises(ValueError, match="unknown protocol 'xmas_v2'"):
        RunSpec(**{**_spec(), "benchmarks": [], "protocol": "xmas_v2"})
    with pytest.raises(ValueError, match="protocol xmas_v1 evaluates"):
        RunSpec(**{**_spec(), "protocol": "xmas_v1", "benchmarks": ["gqa"]})


@pytest.mark.parametrize("selector", [{"name": "full"}, {"name": "random", "label": "full"}])
def test_the_reference_label_is_reserved(selector: dict) -> None:
    from selbench.harness.spec import RunSpec

    with pytest.raises(ValueError, match="'full' is reserved for the full-data reference"):
        RunSpec(**{**_spec(), "selectors": [selector]})


def test_task_data_is_resolved_and_keyed_only_when_given(small_world: Path, tmp_path: Path) -> None:
    from selbench.harness.plan import build_plan
    from selbench.harness.spec import RunSpec

    plain = build_plan(RunSpec(**_spec(small_world)).resolved(tmp_path))
    data = {**_spec(small_world), "evaluation": {"task_data": "hub-data"}}
    local = build_plan(RunSpec(**data).resolved(tmp_path))
    ev = lambda plan: [j for j in plan.jobs if j.stage == "evaluate"]  # noqa: E731
    assert all("task_data" not in j.config for j in ev(plain))  # existing evaluate ids keep theirs
    assert {j.config["task_data"] for j in ev(local)} == {str(tmp_path / "hub-data")}


def test_the_docker_spec_and_make_world_build_the_demos_world() -> None:
    """configs/docker.yaml reuses the demo's baselines and `make world` prepares the demo: both must name the demo's
    world exactly — another noise would regenerate out/world under the other's jobs."""
    import re

    import yaml

    root = Path(__file__).resolve().parents[2]
    world = yaml.safe_load((root / "configs" / "demo.yaml").read_text())["world"]
    assert yaml.safe_load((root / "configs" / "docker.yaml").read_text())["world"] == world
    make = re.search(r"^WORLD_NOISE \?= (\S+)$", (root / "Makefile").read_text(), re.M)
    assert make is not None and float(make.group(1)) == world["noise"]

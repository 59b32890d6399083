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
    assert set(spec.benchmarks) <= set(REGISTRY)
    for sel in spec.selectors:
        assert sel.impl or sel.name in available()
        instantiate(sel.name, sel.impl, sel.config)  # the selector's own config validates too


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(text + "learning_rate: 3\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_spec(tmp_path / "bad.yaml")

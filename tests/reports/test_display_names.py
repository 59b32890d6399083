"""The spec's optional ``display`` section: names for the paper tables, checked at load (an unknown key, a selector
or column the spec does not have, a name given twice, an empty name), saved in spec.json and left out of the hash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from selbench.harness.spec import RunSpec, load_spec
from selbench.reports.tables import display_names

BASE = {"name": "d", "world": {"samples": 3200}, "benchmarks": ["emb_vqa", "emb_pope"], "budgets": ["10%"],
        "selectors": [{"name": "random"}, {"name": "xmas", "label": "ours"}]}


def test_display_names_flow_from_the_spec_to_the_tables() -> None:
    spec = RunSpec(**{**BASE, "display": {"selectors": {"ours": "XMAS (ours)"}, "columns": {"emb_pope": "POPE-F1"},
                                          "pool": "Toy"}})
    names = display_names(spec.model_dump(mode="json"), spec.columns)
    assert names.selectors == {"random": "Random", "ours": "XMAS (ours)", "full": "Full data"}
    assert names.columns == {"emb_vqa": "VQA", "emb_pope": "POPE-F1"}
    # presentation only: renaming changes no result, so the spec hash stays
    assert spec.fingerprint() == RunSpec(**BASE).fingerprint()


@pytest.mark.parametrize("display,message", [
    ({"selector": {"random": "R"}}, "display.selector: Extra inputs are not permitted"),
    ({"selectors": {"randm": "R"}}, "display.selectors names randm, not a selector of this spec (random, ours, xmas, full)"),
    ({"columns": {"emb_vqaa": "VQA"}}, "display.columns names emb_vqaa, not a column of this spec (emb_vqa, emb_pope)"),
    ({"selectors": {"random": "A", "ours": "A"}}, "display.selectors: A given to more than one"),
    ({"columns": {"emb_vqa": " "}}, "display.columns: empty display name for emb_vqa"),
])
def test_bad_display_sections_are_spec_errors(tmp_path: Path, display: dict, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**BASE, "display": display}))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        load_spec(path)

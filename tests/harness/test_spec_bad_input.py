"""Bad input gets a clear error naming the field (or the text is made harmless), never a traceback. One row per
case of the README's bad-input table (the pool's own cases are in tests/pool/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from selbench.harness.spec import load_spec

BASE = {"name": "t", "world": {"out": "w", "samples": 3200}, "selectors": [{"name": "random"}],
        "budgets": [0.1], "benchmarks": ["emb_vqa"]}

SPEC_CASES = [
    ({"finetune": {"epochs": -1}}, r"finetune\.epochs.*greater than 0"),
    ({"finetune": {"batch_size": 0}}, r"finetune\.batch_size.*greater than or equal to 1"),
    ({"finetune": {"lr": 0}}, r"finetune\.lr.*greater than 0"),
    ({"finetune": {"learning_rate": 1e-4}}, r"finetune\.learning_rate.*Extra inputs are not permitted"),
    ({"executor": {"max_parallel": 0}}, r"executor\.max_parallel.*greater than or equal to 1"),
    ({"executor": {"gpus": [0], "finetune_processes": 2}}, r"finetune_processes 2 needs that many devices"),
    ({"budgets": [0.1, "10%"]}, r"budgets \[0\.1, '10%'\] name the same subset twice \(10%\)"),
    ({"budgets": [0.1, 320]}, r"budgets 0\.1, 320 resolve to the same number of samples"),
    ({"budgets": ["ten percent"]}, r"budget 'ten percent': expected a count"),
    ({"budgets": [0]}, r"budget"),
    ({"budgets": []}, r"budgets: the spec names none"),
    ({"selectors": [{"name": "full"}]}, r"'full' is reserved for the full-data reference"),
    ({"selectors": [{"name": "random", "label": "full"}]}, r"'full' is reserved"),
    ({"selectors": [{"name": "random"}, {"name": "length", "label": "random"}]}, r"selector labels must be unique"),
    ({"benchmarks": ["emb_vqaa"]}, r"unknown benchmark 'emb_vqaa' \(did you mean emb_vqa"),
    ({"benchmarks": ["emb_vqa", "emb_vqa"]}, r"emb_vqa named more than once"),
    ({"benchmarks": [], "protocol": "xmas_v2"}, r"unknown protocol 'xmas_v2'"),
    # in a list each benchmark is one primary-metric column: POPE-A/P and MME-C would silently change meaning
    ({"benchmarks": ["scalselect_v1", "mmmu"], "evaluation": {"judge": "gpt-4-0613"}},
     r"benchmarks: scalselect_v1 is a protocol whose columns are not one primary metric per benchmark .*POPE-A.*"
     r"name it alone \(`protocol: scalselect_v1`\)"),
    ({"protocol": "xmas_v1"}, r"protocol xmas_v1 evaluates .*`benchmarks` lists emb_vqa"),
    ({"benchmarks": []}, r"a spec names a `protocol` or its `benchmarks`"),
    # refused at load, not after every fine-tune: each benchmark that cannot be scored without a judge is named
    ({"benchmarks": [], "protocol": "xmas_v1"},
     r"evaluation\.judge is not set.*benchmark mmvet is scored by a judge model.*benchmark llava_bench is scored"),
    ({"benchmarks": [], "protocol": "scalselect_v1"},
     r"evaluation\.judge is not set.*mmbench_cn \(mmbench_cn_dev\) falls back to a GPT matcher.*no judge-free variant"),
    ({"evaluation": {"generation": {"mmvet": {"max_new_tokens": 9}}}}, r"evaluation\.generation names mmvet"),
    ({"evaluation": {"backend": "vllm"}}, r"evaluation\.backend"),
    ({"statistics": {"replicates": 10}}, r"statistics\.replicates.*greater than or equal to 100"),
    ({"statistics": {"confidence": 1.5}}, r"statistics\.confidence.*less than 1"),
    ({"world": {"out": "w", "noise": 1.0}}, r"world\.noise.*less than 1"),
    ({"world": {"out": "w", "noise": -0.1}}, r"world\.noise.*greater than or equal to 0"),
    ({"world": None}, r"a spec needs either `world` \(embedded\) or both `pool` and `target`"),
    ({"learning_rate": 3}, r"learning_rate.*Extra inputs are not permitted"),
]


@pytest.mark.parametrize("change, message", SPEC_CASES, ids=[m[:40] for _, m in SPEC_CASES])
def test_bad_spec_values_are_named_at_load(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(ValueError, match=message) as e:
        load_spec(path)
    assert str(path) in str(e.value)  # the message names the file


@pytest.mark.parametrize("text, message", [("[1, 2]", "a run spec is a YAML mapping"), (None, "run spec not found")])
def test_spec_files_that_are_not_specs(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "spec.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_spec(path)


@pytest.mark.parametrize("label", ["two\nlines", "=HYPERLINK(\"http://x\")", "+1", "@SUM(A1)", "[/x]", "<b>|x|</b>"])
def test_user_text_is_harmless_in_every_export(label: str) -> None:
    import csv
    import io

    from selbench.reports.export import to_csv, to_latex, to_markdown
    from selbench.reports.tables import Cell, Table

    table = Table("t", "T", "caption", ["Selector", "ARP"], [[Cell(label), Cell("1.0", 1.0)]])
    md_row = to_markdown(table).splitlines()[4]
    assert md_row.startswith("| ") and md_row.endswith(" |") and md_row.count(" | ") == 1  # one row, two cells
    tex = to_latex(table)
    assert "\n" not in next(line for line in tex.splitlines() if "1.0" in line).strip("\n")
    field = next(csv.reader(io.StringIO(to_csv(table))))  # header
    cell = list(csv.reader(io.StringIO(to_csv(table))))[1][0]
    assert field == ["Selector", "ARP"] and not cell.startswith(("=", "+", "@"))


def test_labels_print_as_data_in_the_cli() -> None:
    import pandas as pd
    from rich.console import Console

    from selbench import cli
    from selbench.evaluators.protocols import columns_for

    board = pd.DataFrame([{"selector": "[/x]", "budget": "10%", "seed": 0, "arp_v1": 90.0, "emb_vqa": 0.5,
                           "osc_v1": 0.5, "status": "failed", "reason": "[bold]boom[/]"}])
    cli.console = Console(width=200, record=True)
    cli._print_board(board, columns_for(None, ["emb_vqa"]))  # rich markup in labels would raise MarkupError
    out = cli.console.export_text()
    assert "[/x]" in out and "[bold]boom[/]" in out


def test_executor_env_values_never_reach_a_record_and_can_come_from_the_harness(monkeypatch) -> None:
    """A judge's key in ``executor.env``: by reference ("${NAME}", read when jobs start) or by value — either way
    ``spec.json`` (``RunSpec.recorded``), the nightly history and the fingerprint hold its name only."""
    from selbench.harness.spec import RunSpec

    def spec(env: dict) -> RunSpec:
        return RunSpec.model_validate({**BASE, "executor": {"env": env}})

    by_value = spec({"OPENAI_API_KEY": "sk-secret-1"})
    assert by_value.recorded()["executor"]["env"] == {"OPENAI_API_KEY": "<redacted>"}
    assert "sk-secret" not in str(by_value.recorded())
    assert by_value.fingerprint() == spec({"OPENAI_API_KEY": "sk-secret-2"}).fingerprint()  # rotating it: no change
    assert spec({}).fingerprint() == RunSpec.model_validate(BASE).fingerprint()
    by_ref = spec({"OPENAI_API_KEY": "${SELBENCH_TEST_KEY}", "PLAIN": "x"})
    monkeypatch.delenv("SELBENCH_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match=r"executor\.env\.OPENAI_API_KEY = \$\{SELBENCH_TEST_KEY\}: the variable "
                                         r"SELBENCH_TEST_KEY is not set"):
        by_ref.executor.job_env()
    monkeypatch.setenv("SELBENCH_TEST_KEY", "sk-from-host")
    assert by_ref.executor.job_env() == {"OPENAI_API_KEY": "sk-from-host", "PLAIN": "x"}

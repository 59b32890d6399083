"""`selbench submit`: the template's selector goes through conformance and lands on the leaderboard marked as a
submission; a package that breaks the selection contract, or ignores its seed, is rejected with the reason and
never reaches the leaderboard. (Containment of hostile code under the Docker executor: test_docker.py.)"""

from __future__ import annotations

import shutil
import site
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from selbench.cli import app
from selbench.harness.submit import (
    Submission,
    SubmissionError,
    conformance,
    from_image,
    from_package,
    image_tag,
    submit,
)
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def spec_copy(small_run: dict, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(small_run["root"] / "store", store)  # the baselines' jobs are cached
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**small_run["spec"], "store": str(store)}))
    return path


def hostile_package(tmp_path: Path, cls: str) -> Path:
    """A real package whose one entry point is a misbehaving selector from tests/harness/hostile.py."""
    pkg = tmp_path / cls
    (pkg / "src" / "evil").mkdir(parents=True)
    (pkg / "src" / "evil" / "__init__.py").write_text((REPO / "tests" / "harness" / "hostile.py").read_text())
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "evil-{cls.lower()}"\nversion = "6.6.6"\n'
        f'[project.entry-points."selbench.selectors"]\nevil-{cls.lower()} = "evil:{cls}"\n'
        '[tool.setuptools.packages.find]\nwhere = ["src"]\n')
    return pkg


def test_template_selector_appears_on_the_leaderboard(small_run, tmp_path) -> None:
    spec = spec_copy(small_run, tmp_path)
    out = CliRunner().invoke(app, ["submit", str(REPO / "templates" / "selector"), "--spec", str(spec),
                                 "--trust-local"])
    assert out.exit_code == 0, out.output
    assert "submission balanced [submission 0.1.0] from" in out.output  # the label prints as data, not markup
    run_dir = Path(yaml.safe_load(spec.read_text())["store"]) / "runs" / "small"
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    mine = board[board["selector"] == "balanced [submission 0.1.0]"]
    assert len(mine) == 2 and set(mine["status"]) == {"done"} and mine["arp_v1"].notna().all()
    assert {"picker", "length", "full"} <= set(board["selector"])  # next to the baselines, under the same protocol
    assert "balanced [submission 0.1.0]" in (run_dir / "report" / "index.html").read_text()
    # installed beside the store, not into the harness's environment
    site_dir = tmp_path / "store" / "submissions" / "balanced-selector-0.1.0" / "site"
    assert (site_dir / "balanced_selector" / "__init__.py").is_file()
    assert not any((Path(p) / "balanced_selector").exists() for p in site.getsitepackages())


def test_contract_breaking_package_is_rejected(small_run, tmp_path) -> None:
    spec = spec_copy(small_run, tmp_path)
    sub = from_package(hostile_package(tmp_path, "WrongCountSelector"), tmp_path / "store", trust_local=True)
    problems = conformance(spec, sub, tmp_path / "work")
    assert len(problems) == 1, problems  # the first run fails; there is no second
    assert problems[0].startswith("run 1, select: ") and "returned 99 indices for a budget of 100" in problems[0]


def test_nondeterministic_package_is_rejected(small_run, tmp_path) -> None:
    spec = spec_copy(small_run, tmp_path)
    sub = from_package(hostile_package(tmp_path, "NondeterministicSelector"), tmp_path / "store",
                       trust_local=True)
    with pytest.raises(SubmissionError, match=r"rejected: non-deterministic: two runs with seed 0 at budget 0.25"):
        submit(spec, sub)
    board = tmp_path / "store" / "runs" / "small" / "leaderboard.parquet"
    assert not any("submission" in s for s in pd.read_parquet(board)["selector"])  # nothing was added


def test_a_package_runs_unsandboxed_only_when_trusted(tmp_path) -> None:
    """Outside the Docker executor a package's code would run with the user's rights: refused unless trusted,
    and nothing was installed or imported."""
    pkg = hostile_package(tmp_path, "WriteOutsideSelector")
    with pytest.raises(SubmissionError, match=r"runs only in a container.*executor.kind: docker.*--trust-local"):
        from_package(pkg, tmp_path / "store")
    assert not (tmp_path / "store" / "submissions").exists()
    out = CliRunner().invoke(app, ["submit", str(pkg), "--spec", str(REPO / "configs" / "demo.yaml")])
    assert out.exit_code == 1 and "runs only in a container" in out.output


def test_package_image_tags_are_docker_names() -> None:
    assert image_tag("Balanced_Selector", "0.1.0+local.7") == "selbench-submission/balanced_selector:0.1.0-local.7"


def test_submission_label_and_image_version() -> None:
    assert from_image("registry.local/team/sel:1.2", "x").version == "1.2"
    assert from_image("sel", "x").label == "x [submission latest]"
    assert Submission("x", "2", "p").selector() == {"name": "x", "label": "x [submission 2]"}

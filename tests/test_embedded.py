"""build_world reuses a complete world and rebuilds parts whose parameters or generator version changed."""

import json

from selbench.embedded import STAGE1, build_world
from selbench.pool import world


def test_markers_reuse_and_rebuild(tmp_path) -> None:
    quick = STAGE1.model_copy(update={"epochs": 0.1})
    build_world(tmp_path, seed=1, n_samples=120, n_bench=10, stage1=quick, log=lambda m: None)
    weights = tmp_path / "models" / "target" / "model.safetensors"
    first = weights.stat().st_mtime_ns
    logs: list[str] = []
    build_world(tmp_path, seed=1, n_samples=120, n_bench=10, stage1=quick, log=logs.append)
    assert logs == [] and weights.stat().st_mtime_ns == first  # nothing redone
    # the default noise is not in the marker: worlds built before the setting existed are reused
    assert "noise" not in json.loads((tmp_path / "data.done").read_text())
    build_world(tmp_path, seed=1, n_samples=120, n_bench=12, stage1=quick, log=logs.append)
    assert logs and logs[0].startswith("generating pool")  # a changed setting regenerates data and models
    assert json.loads((tmp_path / "data.done").read_text())["n_bench"] == 12
    assert weights.stat().st_mtime_ns != first
    marker = json.loads((tmp_path / "data.done").read_text())
    (tmp_path / "data.done").write_text(json.dumps({**marker, "world_version": world.WORLD_VERSION - 1}))
    logs.clear()
    build_world(tmp_path, seed=1, n_samples=120, n_bench=12, stage1=quick, log=logs.append)
    assert logs and logs[0].startswith("generating pool")  # an older generator's world is not reused
    logs.clear()
    build_world(tmp_path, seed=1, n_samples=120, n_bench=12, noise=0.3, stage1=quick, log=logs.append)
    assert logs and logs[0].startswith("generating pool (120 samples, 30% label noise)")  # another noise: rebuilt
    assert json.loads((tmp_path / "data.done").read_text())["noise"] == 0.3


def test_a_bad_noise_is_refused_before_anything_is_touched(tmp_path) -> None:
    import pytest
    from typer.testing import CliRunner

    from selbench.cli import app

    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "pool.json").write_text("[]")  # stands for an existing world: it must survive
    with pytest.raises(ValueError, match=r"world noise must be in \[0, 1\): got 1.0"):
        build_world(tmp_path, noise=1.0, log=lambda m: None)
    assert (tmp_path / "pool" / "pool.json").read_text() == "[]"
    out = CliRunner().invoke(app, ["world", "--out", str(tmp_path / "new"), "--noise", "-0.1"])
    assert out.exit_code == 2 and "error: world noise must be in [0, 1): got -0.1" in out.output
    assert not (tmp_path / "new").exists()


def test_two_processes_building_one_world_build_it_once(tmp_path) -> None:
    """Two builders of the same folder at once (two test workers, two runners on different stores): one builds, the
    other waits on the lock and reuses the marked parts. Without the lock both found no marker and built: the second
    trained stage 1 again over the models the first had saved (or deleted the pool the first was writing)."""
    import subprocess
    import sys

    args = "seed=1, n_samples=120, n_bench=10, stage1=STAGE1.model_copy(update={'epochs': 0.1})"
    code = ("import sys; from selbench.embedded import STAGE1, build_world; "
            f"build_world(sys.argv[1], {args}, log=lambda m: print(m, flush=True))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "w")], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum(o.count("generating pool") for o in outs) == 1, outs  # built once; the other reused it
    assert sum(o.count("stage-1 alignment of the target") for o in outs) == 1, outs
    logs: list[str] = []
    again = lambda: build_world(tmp_path / "w", seed=1, n_samples=120, n_bench=10,  # noqa: E731
                                stage1=STAGE1.model_copy(update={"epochs": 0.1}), log=logs.append)
    again()
    assert logs == []  # complete and marked
    # a lock that cannot be opened (here a folder in its place; in use, a read-only parent) leaves a complete world
    # readable: nothing needs building, so nothing needs the lock
    (tmp_path / ".w.build.lock").unlink()
    (tmp_path / ".w.build.lock").mkdir()
    again()
    assert logs == []

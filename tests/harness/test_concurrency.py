"""Runners sharing a store, a runner killed with SIGKILL, and a store tampered with by hand — on the small world
(one selector, one budget, the hf backend), so each full run is a handful of small jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import small_run_spec
from tests.harness.processes import job_processes

from selbench.harness import runner
from selbench.harness.plan import build_plan
from selbench.harness.spec import load_spec
from selbench.harness.stages.select import SELECTION
from selbench.harness.store import Store

REPO = Path(__file__).resolve().parents[2]

# A runner in its own process; prints the statuses and the leaderboard's ARP (repr round-trips every float bit).
RUN = """
import json, sys
from selbench.harness import runner
r = runner.run(sys.argv[1])
print("RESULT " + json.dumps({"statuses": {j: o.status for j, o in r.statuses.items()},
                              "arp": {s: float(a) for s, a in zip(r.board["selector"], r.board["arp_v1"])}}))
"""


def _spec(world: Path, root: Path, name: str = "conc") -> Path:
    spec = small_run_spec(world, root / "store", [{"name": "random"}])
    # one epoch: the reference still scores above zero on these three benchmarks, so ARP is defined
    spec.update(name=name, budgets=[0.25], benchmarks=["emb_vqa", "emb_mc", "emb_ocr"])
    spec["finetune"].update(epochs=1, batch_size=16)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _start(spec: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, str(spec)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True, start_new_session=True)


def _result(proc: subprocess.Popen, log: Path) -> dict:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def shared(small_world: Path, tmp_path_factory) -> dict:
    """Three runners started together on one store: two with the same spec (the run lock: one waits for the
    other), one with the same jobs under another run name (the job locks: they share the work)."""
    root = tmp_path_factory.mktemp("shared")
    specs = [_spec(small_world, root), _spec(small_world, root), _spec(small_world, root, "conc-b")]
    logs = [root / f"runner-{i}.log" for i in range(3)]
    procs = [_start(s, log) for s, log in zip(specs, logs)]
    results = [_result(p, log) for p, log in zip(procs, logs)]
    return {"root": root, "store": root / "store", "spec": specs[0], "results": results,
            "logs": [log.read_text() for log in logs]}


@pytest.mark.slow
def test_runners_sharing_a_store_all_finish_with_the_same_results(shared: dict) -> None:
    results = shared["results"]
    arp = results[0]["arp"]
    assert set(arp) == {"full", "random"} and all(a == a for a in arp.values())  # defined (not NaN)
    assert all(r["arp"] == arp for r in results)
    jobs = set(results[0]["statuses"])
    assert all(set(r["statuses"]) == jobs for r in results)
    for jid in jobs:  # every job ran once; the other runners reused it
        assert sorted(r["statuses"][jid] for r in results) == ["cached", "cached", "done"], jid
    assert any("is in progress in this store" in log for log in shared["logs"])  # the same run name waited
    store = shared["store"]
    assert not list((store / "jobs").glob("*.tmp-*")) and not list((store / "jobs").glob("*.invalid-*"))
    assert not list((store / "locks" / "staging").glob("*.lock"))


@pytest.mark.slow
def test_kill_dash_nine_leaves_no_job_process_and_the_rerun_gives_the_same_board(
        shared: dict, small_world: Path, tmp_path: Path) -> None:
    spec = _spec(small_world, tmp_path)
    store = tmp_path / "store"
    proc = _start(spec, tmp_path / "killed.log")
    deadline = time.time() + 600
    while time.time() < deadline:  # a fine-tune in flight
        if any((store / "jobs").glob("finetune-*.tmp-*")) and job_processes(store):
            break
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("never saw a fine-tune in flight")
    assert job_processes(store)
    os.kill(proc.pid, signal.SIGKILL)  # the runner alone: its jobs are in sessions of their own
    proc.wait()
    deadline = time.time() + 10
    while job_processes(store) and time.time() < deadline:
        time.sleep(0.2)
    assert not job_processes(store), "a job process outlived its runner"
    # published jobs only: a job that finished in its staging folder but was not yet sealed when the runner died
    # is a staging folder of a dead owner, removed and redone
    before = {p.name for p in (store / "jobs").iterdir() if (p / "meta.json").exists() and ".tmp-" not in p.name}
    messages: list[str] = []
    result = runner.run(spec, on_message=messages.append)
    assert any("staging folder(s) of dead owners removed" in m for m in messages)
    assert {jid for jid, o in result.statuses.items() if o.status == "cached"} == before
    arp = {s: float(a) for s, a in zip(result.board["selector"], result.board["arp_v1"])}
    assert arp == shared["results"][0]["arp"]  # bit-identical
    assert not list((store / "jobs").glob("*.tmp-*")) and not list((store / "jobs").glob("*.invalid-*"))


@pytest.mark.slow
def test_a_tampered_store_is_detected_named_and_redone(shared: dict, small_world: Path, tmp_path: Path) -> None:
    """A value edited in results.json, a truncated meta.json, and a selection rewritten with a duplicate index
    (re-sealed, as if the selector had written it): each is caught, named, moved aside and redone."""
    shutil.copytree(shared["store"], tmp_path / "store", symlinks=True)
    spec = _spec(small_world, tmp_path)
    store = Store(tmp_path / "store")
    plan = build_plan(load_spec(spec).resolved(Path.cwd()))
    ref = plan.reference.jobs
    cell = plan.cells[0].jobs

    results = store.path(ref["evaluate"]) / "results.json"
    rows = json.loads(results.read_text())
    rows[0]["value"] = 1.0
    results.write_text(json.dumps(rows, indent=1))
    meta = store.path(ref["select"]) / "meta.json"
    meta.write_text(meta.read_text()[:100])
    sel = store.path(cell["select"])
    side = json.loads((sel / f"{SELECTION}.json").read_text())
    side["indices"][-1] = side["indices"][0]
    (sel / f"{SELECTION}.json").write_text(json.dumps(side))
    timings = store.timings(cell["select"])
    assert timings is not None and store.seal(store.read_job(cell["select"]), sel, timings) is None

    messages: list[str] = []
    events: list = []
    result = runner.run(spec, on_message=messages.append, on_event=lambda j, o: events.append((j.id, o)))
    said = "\n".join(messages)
    assert f"jobs/{ref['evaluate']}/results.json changed since the job completed" in said
    assert f"jobs/{ref['select']}/meta.json changed since the job completed" in said and "(truncated)" in said
    dup = f"selection of {cell['select']} rejected: index {side['indices'][0]} appears 2 times"
    # the fine-tune stage refused it (its input changed, so it re-ran, and checked the selection before training)
    assert any(jid == cell["finetune"] and o and o.status == "failed" and dup in (o.reason or "")
               for jid, o in events), events
    assert f"{cell['select']} is invalid: {dup}" in said  # …and collection rejected the select job itself
    assert result.statuses[ref["evaluate"]].reason.startswith("redone: ")
    assert {o.status for o in result.statuses.values()} <= {"done", "cached"}
    arp = {s: float(a) for s, a in zip(result.board["selector"], result.board["arp_v1"])}
    assert arp == shared["results"][0]["arp"]
    # the evidence is kept, not deleted
    kept = list((store.root / "jobs").glob(f"{ref['evaluate']}.invalid-*"))
    assert len(kept) == 1 and json.loads((kept[0] / "results.json").read_text())[0]["value"] == 1.0
    assert list((store.root / "jobs").glob(f"{cell['select']}.invalid-*"))
    assert len(list((store.root / "invalid").glob("*.json"))) == len(list((store.root / "jobs").glob("*.invalid-*")))

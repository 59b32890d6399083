"""The store's trust boundary without training anything: seals (hashes + the executor's timings), verification that
names the file, quarantine that keeps the evidence, owner locks on staging folders, and the harness's own check of a
selection (the fine-tune stage refuses a tampered one before training)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from selbench.harness import store as store_module
from selbench.harness.contracts import FinetuneConfig, SelectConfig
from selbench.harness.stages.select import SELECTION, checked_selection
from selbench.harness.store import Job, Store, holder
from selbench.models.training import TrainConfig
from selbench.pool.manifest import Manifest
from selbench.selectors.base import SelectionError
from selbench.selectors.scoring import write_selection

TIMINGS = {"wall_s": 2.5, "gpu_s": 0.0, "n_gpus": 0, "executor": "local", "measured_by": "executor"}


def _finished(store: Store, job: Job, files: dict[str, bytes | str], timings: dict | None = None) -> Path:
    """A job the way an executor leaves it: outputs staged, meta.json last, sealed, then published."""
    store.write_job(job)
    tmp = store.staging(job.id)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data.encode() if isinstance(data, str) else data)
    store.finish(job, tmp, {"timings": {"wall_s": 0.001, "parts": {"selection": 0.001}}})
    assert store.seal(job, tmp, timings or TIMINGS) is None
    return store.publish(job.id, tmp)


def test_sealed_outputs_verify_and_any_change_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "SMALL_FILE", 64)  # so weights.bin takes the big-file path
    store = Store(tmp_path / "store")
    job = Job("prepare", {"n": 1})
    folder = _finished(store, job, {"results.json": json.dumps([{"value": 0.25}]), "weights.bin": b"w" * 1000})
    assert store.verify(job) is None
    results = folder / "results.json"
    original = results.read_text()

    results.write_text(original.replace("0.25", "0.75"))  # same size, a value changed by hand
    problem = store.verify(job)
    assert problem and f"jobs/{job.id}/results.json changed since the job completed (sha256" in problem
    results.write_text(original)
    assert store.verify(job) is None

    meta = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(meta[: len(meta) // 2])
    problem = store.verify(job)
    assert problem and f"jobs/{job.id}/meta.json changed" in problem and "(truncated)" in problem
    (folder / "meta.json").write_text(meta)

    (folder / "notes.txt").write_text("planted")
    assert f"jobs/{job.id}/notes.txt was added" in (store.verify(job) or "")
    (folder / "notes.txt").unlink()
    results.unlink()
    assert f"jobs/{job.id}/results.json is missing" in (store.verify(job) or "")
    results.write_text(original)

    # a big file: size + mtime as recorded → not re-hashed; a changed mtime → re-hashed, and the edit is found
    weights = folder / "weights.bin"
    st = weights.stat()
    weights.write_bytes(b"x" * 1000)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.verify(job) is None  # the documented blind spot of the cheap check
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert f"jobs/{job.id}/weights.bin changed" in (store.verify(job) or "")
    weights.write_bytes(b"w" * 1000)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.verify(job) is None

    t = store.timings_path(job.id)
    t.write_text(t.read_text().replace("2.5", "0.5"))  # a forged wall time
    assert f"timings/{job.id}.json is missing or changed" in (store.verify(job) or "")

    unsealed = Job("prepare", {"n": 2})
    store.write_job(unsealed)
    store.commit(unsealed, store.staging(unsealed.id), {})  # a job run by hand: nobody sealed it
    assert "no hash manifest" in (store.verify(unsealed) or "")


def test_meta_reports_the_executors_wall_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    job = Job("prepare", {"n": 1})
    _finished(store, job, {})
    t = store.meta(job.id)["timings"]
    assert t["wall_s"] == 2.5 and t["measured_by"] == "executor"
    assert t["self_reported"]["wall_s"] == 0.001 and t["parts"] == {"selection": 0.001}


def test_redone_upstream_outputs_invalidate_the_jobs_that_consumed_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    up = Job("prepare", {"n": 1})
    _finished(store, up, {"manifest.parquet": b"v1"})
    down = Job("select", {"k": 1}, {"pool": up.id})
    _finished(store, down, {"selection.txt": "a\n"})
    assert store.verify(down) is None
    store.quarantine(up.id, "test")
    assert f"upstream job {up.id} is not complete" in (store.verify(down) or "")
    _finished(store, up, {"manifest.parquet": b"v2"})  # redone, different outputs
    assert f"upstream job {up.id} was redone with different outputs" in (store.verify(down) or "")
    store.quarantine(up.id, "test")
    _finished(store, up, {"manifest.parquet": b"v1"})  # redone, the same outputs: the consumer stays valid
    assert store.verify(down) is None


def test_quarantine_moves_the_evidence_aside(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    job = Job("evaluate", {"n": 1})
    folder = _finished(store, job, {"results.json": "[1]"})
    (store.root / "resume" / job.id).mkdir(parents=True)
    (folder / "results.json").write_text("[2]")
    reason = store.verify(job)
    assert reason is not None
    moved = store.quarantine(job.id, reason)
    assert moved.name.startswith(f"{job.id}.invalid-") and (moved / "results.json").read_text() == "[2]"
    assert not store.done(job.id) and not store.hashes_path(job.id).exists()
    assert (store.root / "resume" / moved.name).is_dir()
    record = json.loads((store.root / "invalid" / f"{moved.name}.json").read_text())
    assert record["reason"] == reason and record["hashes"]["files"]["results.json"]["size"] == 3
    assert reason in store.log_path(job.id).read_text()
    again = store.quarantine(job.id, "twice", folder=store.staging(job.id))  # same second: a distinct name
    assert again != moved and moved.exists()


def test_seal_refuses_unreadable_json_and_links(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    job = Job("evaluate", {"n": 1})
    tmp = store.staging(job.id)
    (tmp / "results.json").write_text('[{"value": 0.')
    store.finish(job, tmp, {})
    assert "results.json is unreadable" in (store.seal(job, tmp, TIMINGS) or "")
    (tmp / "results.json").write_text("[]")
    (tmp / "meta.json").write_text(json.dumps({"id": "someone-else"}))
    assert "does not describe job" in (store.seal(job, tmp, TIMINGS) or "")
    store.finish(job, tmp, {})
    (tmp / "weights").symlink_to("/etc/hostname")  # a link out of the folder (a sandboxed job could make one)
    assert "weights is not a regular file" in (store.seal(job, tmp, TIMINGS) or "")
    (tmp / "weights").unlink()
    assert store.seal(job, tmp, TIMINGS) is None


def _hold(root: str, job_id: str, conn) -> None:
    """Another runner (a forked process): owns a staging folder of ``job_id`` and holds the job's lock."""
    s = Store(root)
    conn.send(str(s.staging(job_id)))
    lock = s.try_lock("jobs", job_id, "test holder")
    conn.send(lock is not None)
    time.sleep(600)


def _holder(root: Path, job_id: str) -> tuple[mp.Process, Path]:
    ours, theirs = mp.get_context("fork").Pipe()
    proc = mp.get_context("fork").Process(target=_hold, args=(str(root), job_id, theirs), daemon=True)
    proc.start()
    staging = Path(ours.recv())
    assert ours.recv() is True
    return proc, staging


def test_a_live_staging_folder_is_never_reclaimed_a_dead_ones_is(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    other, theirs = _holder(store.root, "select-x")
    try:
        mine = store.staging("select-x")  # reclaims nothing of theirs
        assert theirs.is_dir() and mine.is_dir() and mine != theirs
        assert store.reclaim_staging() == [] and store.staging_live("select-x")
        assert store.try_lock("jobs", "select-x") is None
        busy = store.job_busy("select-x")
        assert busy and f"pid {other.pid}" in busy and "test holder" in busy
        assert f"pid {other.pid}" in holder(store.lock_path("jobs", "select-x"))
    finally:
        other.kill()
        other.join()
    assert store.reclaim_staging() == [theirs] and not theirs.exists() and mine.is_dir()
    lock = store.try_lock("jobs", "select-x")  # the kernel dropped the dead holder's lock
    assert lock is not None
    lock.release()
    store.publish("select-x", mine)
    assert store.path("select-x").is_dir() and not list((store.root / "locks" / "staging").iterdir())


# ---- the harness's check of a selection

def _pool(n: int = 20) -> Manifest:
    frame = pd.DataFrame({"index": range(n), "uid": [f"s{i:03d}" for i in range(n)]})
    return Manifest(frame, Path("."), "pool-hash", "test")


def _select_job(store: Store, pool: Manifest, budget: float = 0.25) -> Job:
    prepare = Job("prepare", {"n": len(pool)})
    job = Job("select", SelectConfig(selector="random", budget=budget, seed=0).canonical(), {"pool": prepare.id})
    store.write_job(job)
    out = store.path(job.id)
    write_selection(out / SELECTION, pool, [3, 1, 4, 9, 7], {"budget": budget, "seed": 0})
    return job


def _tamper(store: Store, job: Job, indices: list, uids: list[str] | None = None) -> None:
    side = store.path(job.id) / f"{SELECTION}.json"
    data = json.loads(side.read_text())
    data["indices"] = indices
    side.write_text(json.dumps(data))
    if uids is not None:
        (store.path(job.id) / SELECTION).write_text("".join(f"{u}\n" for u in uids))


@pytest.mark.parametrize("indices, uids, reason", [
    ([1, 3, 4, 7, 7], None, "index 7 appears 2 times"),
    ([1, 3, 4, 7, 9, 11], None, "6 indices, but the budget 0.25 of this 20-sample pool is exactly 5"),
    ([1, 3, 4, 7, 20], None, "index 20 is not in the pool"),
    ([1, 3, 4, 7, 9.0], None, "no list of integer 'indices'"),
    ([1, 3, 4, 7, 8], None, "does not list the selected rows' uids (line 5: 's009', the indices give 's008')"),
    ([1, 3, 4, 7, 9], ["s001", "s003", "s004", "s007"], "line 5: nothing, the indices give 's009'"),
])
def test_a_tampered_selection_is_rejected_with_the_reason(tmp_path: Path, indices, uids, reason) -> None:
    store, pool = Store(tmp_path / "store"), _pool()
    job = _select_job(store, pool)
    assert checked_selection(store, job, pool) == [1, 3, 4, 7, 9]
    _tamper(store, job, indices, uids)
    with pytest.raises(SelectionError, match="rejected") as e:
        checked_selection(store, job, pool)
    assert reason in str(e.value) and job.id in str(e.value)


def test_the_finetune_stage_refuses_a_tampered_selection_before_training(tmp_path: Path, monkeypatch) -> None:
    from selbench.harness.stages import finetune

    store, pool = Store(tmp_path / "store"), _pool()
    select = _select_job(store, pool)
    _tamper(store, select, [1, 3, 4, 7, 7])  # a duplicate, as a selector writing its own folder could
    monkeypatch.setattr(finetune, "load_manifest", lambda path: pool)
    trained = []
    monkeypatch.setattr(finetune, "train_on_pool", lambda *a, **k: trained.append(1))
    monkeypatch.setattr(finetune, "train_distributed", lambda *a, **k: trained.append(1))
    cfg = FinetuneConfig(recipe=TrainConfig(), target=str(tmp_path / "target"), target_id=None)
    job = Job("finetune", cfg.canonical(), {"pool": select.deps["pool"], "select": select.id})
    with pytest.raises(SelectionError, match=f"selection of {select.id} rejected: index 7 appears 2 times"):
        finetune.run(job, store, tmp_path / "out")
    assert not trained


def test_a_lock_waits_for_its_holder_and_says_who(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    other, _ = _holder(store.root, "run-x")
    said: list[str] = []
    t0 = time.monotonic()
    killer = threading.Timer(1.0, other.kill)
    killer.start()
    with store.locked("jobs", "run-x", "me", on_wait=said.append):
        assert time.monotonic() - t0 >= 0.9
    other.join()
    assert said and f"pid {other.pid}" in said[0]


def test_outputs_that_cannot_be_listed_or_parsed_are_rejected_not_a_crash(tmp_path: Path) -> None:
    """A hostile job's outputs: JSON nested past the parser, a tree nested past any job, an unreadable folder
    (as a non-root runner sees it) — each is a problem naming the file, and its leftovers can be removed."""
    from selbench.harness.store import MAX_DEPTH, Job, Store, remove_tree

    store = Store(tmp_path / "store")
    job = Job("score", {"selector": "x"})
    store.write_job(job)

    def staged() -> Path:
        tmp = store.staging(job.id)
        (tmp / "meta.json").write_text(json.dumps({"id": job.id}))
        return tmp

    tmp = staged()
    (tmp / "deep.json").write_text("[" * 100_000)
    assert "deep.json is unreadable (RecursionError" in store.seal(job, tmp, {})
    store.abandon(tmp)

    tmp = staged()
    deep = tmp.joinpath(*["d"] * (MAX_DEPTH + 3))
    deep.mkdir(parents=True)
    assert f"nested more than {MAX_DEPTH} folders deep" in store.seal(job, tmp, {})
    nested = tmp_path / "nested"
    level = nested
    for _ in range(1500):  # too deep for shutil.rmtree's (and os.makedirs') recursion on 3.11
        level = level / "n"
        level.mkdir(parents=level.parent == nested)
    remove_tree(nested)
    assert not nested.exists()
    store.abandon(tmp)

    if os.geteuid() != 0:  # root reads a mode-000 folder anyway
        tmp = staged()
        (tmp / "hidden").mkdir()
        (tmp / "hidden" / "x").write_text("x")
        (tmp / "hidden").chmod(0)
        try:
            assert "hidden cannot be listed" in store.seal(job, tmp, {})
        finally:
            (tmp / "hidden").chmod(0o755)


def test_unchanged_run_files_are_not_rewritten(tmp_path: Path) -> None:
    from selbench.harness.results import write_if_changed

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = tmp_path / "results.parquet"
    assert write_if_changed(path, frame.to_parquet(index=False))
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert not write_if_changed(path, frame.to_parquet(index=False))  # same frame, same bytes: left alone
    assert path.stat().st_mtime_ns == before
    assert write_if_changed(path, frame.assign(a=[1, 3]).to_parquet(index=False))
    assert pd.read_parquet(path)["a"].tolist() == [1, 3]

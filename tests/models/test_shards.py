"""Feature extraction split over processes (selbench.models.extract.Sharding; the score stage's ``workers``):
two processes on CPU give the one-process artifacts bit for bit, a killed or half-failed extraction resumes from the
shards it left (a half-written shard is never read), feature shards are float16 and come back memory-mapped, and
the selection math reads such features a block at a time."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from selbench.harness.contracts import ScoreConfig
from selbench.harness.stages.score import score
from selbench.models import tiny
from selbench.models.chat import IMAGE
from selbench.models.extract import FEATURE_DTYPE, MERGED, FeatureEngine, RankError, Sharding, masked_mean, wait_for
from selbench.models.ranks import RankProcesses, rank_device
from selbench.pool.manifest import Manifest, examples, save_manifest
from selbench.selectors.base import load_artifacts
from selbench.selectors.prism import redundancy_scores
from selbench.selectors.scalselect import leverage_scores

ROWS = 48  # the multi-process tests score the small world's first rows (images and a few text-only rows)
SHARD = 8  # examples per shard there: about a dozen shards to share out, kill and resume


def _config(small_world: Path, workers: int) -> ScoreConfig:
    extra = {"workers": workers} if workers > 1 else {}  # as a plan sets it: only when > 1
    return ScoreConfig(selector="scalselect", impl=None, config={}, device=None, batch_size=8,
                       target=str(small_world / "models" / "target"), **extra)


@pytest.fixture(scope="module")
def manifest(small_pool: Manifest, tmp_path_factory) -> Path:
    head = Manifest(small_pool.frame.iloc[:ROWS].reset_index(drop=True), small_pool.image_root,
                    small_pool.content_hash, small_pool.source)
    return save_manifest(head, tmp_path_factory.mktemp("pool") / "manifest.parquet")


@pytest.fixture(scope="module")
def one_process(small_world: Path, manifest: Path, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("one-process")
    score(_config(small_world, 1), manifest, out, shard_size=SHARD)
    return load_artifacts(out / "artifacts.npz")


@pytest.mark.slow
def test_two_processes_equal_one_bit_for_bit(small_world: Path, manifest: Path, one_process, tmp_path: Path) -> None:
    meta = score(_config(small_world, 2), manifest, tmp_path, shard_size=SHARD)
    two = load_artifacts(tmp_path / "artifacts.npz")
    assert sorted(two) == sorted(one_process)
    for name, a in one_process.items():
        b = two[name]
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
    assert two["features"].dtype == FEATURE_DTYPE
    assert "feature extraction shared by 2 processes" in meta["notes"]
    assert not (tmp_path / "work").exists()  # the ranks' scratch (shards, logs) is gone once all have finished


@pytest.mark.slow
def test_killed_two_process_extraction_resumes(small_world: Path, manifest: Path, one_process,
                                               tmp_path: Path) -> None:
    cfg = _config(small_world, 2)
    code = ("import json, sys; from pathlib import Path; from selbench.harness.contracts import ScoreConfig; "
            "from selbench.harness.stages.score import score; "
            "score(ScoreConfig.model_validate(json.loads(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]), "
            "shard_size=int(sys.argv[4]))")
    with open(tmp_path / "job.log", "wb") as log:
        job = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg.model_dump(mode="json")), str(manifest),
                                str(tmp_path), str(SHARD)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "SELBENCH_NO_PROGRESS": "1",  # this process's threads:
                                    "OMP_NUM_THREADS": str(torch.get_num_threads())},  # its numbers are the reference
                               start_new_session=True)
    shards = tmp_path / "work" / "shards"
    deadline = time.monotonic() + 180
    while len(list(shards.glob("shard-?????.npy"))) < 2:
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "no shards after 180 s"
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)  # rank 0 and the rank it started, as an executor's timeout does
    job.wait()
    n_shards = math.ceil(len(one_process["rows"]) / SHARD)
    done = sorted(int(p.name[6:11]) for p in shards.glob("shard-?????.npy"))
    assert 2 <= len(done) < n_shards and not (shards / MERGED).exists()
    # Mark a finished shard (zeros: it must be reused, not recomputed) and leave a half-written one under the
    # temporary name a killed writer leaves (it must be recomputed, never read).
    kept = done[0]
    np.save(shards / f"shard-{kept:05d}.npy", np.zeros_like(np.load(shards / f"shard-{kept:05d}.npy")))
    half = next(s for s in range(n_shards) if s not in done)
    (shards / f"shard-{half:05d}.tmp.npy").write_bytes(b"\x93NUMPY half-written")

    # The same job again, here in one process (shards do not depend on how many processes wrote them; rank 0's
    # resumption is the same code either way, and one process fewer to start keeps the test short).
    score(_config(small_world, 1), manifest, tmp_path, shard_size=SHARD)
    feats, ref = load_artifacts(tmp_path / "artifacts.npz")["features"], one_process["features"]
    kept_rows = slice(kept * SHARD, (kept + 1) * SHARD)
    assert not feats[kept_rows].any()
    others = np.ones(len(ref), dtype=bool)
    others[kept_rows] = False
    assert feats[others].tobytes() == ref[others].tobytes()


# ---------------------------------------------------------------- one process, in this one (fast)

@pytest.fixture(scope="module")
def target(small_world: Path):
    return tiny.load(small_world / "models" / "target", attn="sdpa")


def _engine(target, sharding: Sharding) -> FeatureEngine:
    model, processor = target
    return FeatureEngine(model, processor, model.config.image_seq_length, device="cpu", batch_size=4,
                         sharding=sharding)


def _image_means(batch, cap) -> np.ndarray:  # PRISM's feature
    return masked_mean(cap.blocks[0].float(), batch.roles == IMAGE).numpy()


def test_a_dead_rank_is_reported_and_its_shards_are_reused(target, small_pool, tmp_path: Path) -> None:
    rows = [int(i) for i in np.flatnonzero(small_pool.has_image.to_numpy())[:22]]
    exs = examples(small_pool, rows)  # 22 examples, shards of 4: 6 shards, the last one short
    kw = {"n_blocks": 1, "blocks": [0], "dtype": FEATURE_DTYPE}
    ref = _engine(target, Sharding(size=4)).run(exs, _image_means, **kw)  # in memory, no shards
    assert ref.dtype == np.float16 and ref.shape == (22, 128)

    # Rank 1 of 2 writes shards 1, 3, 5, then waits for rank 0's merged file; rank 0 is gone.
    gone = Sharding(rank=1, world=2, size=4, dead_peer=lambda: "rank 0 (pid 1) exited")
    with pytest.raises(RankError, match=r"rank 0 \(pid 1\) exited before .*merged\.npy was written"):
        _engine(target, gone).run(exs, _image_means, shard_dir=tmp_path, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00001.npy", "shard-00003.npy", "shard-00005.npy"]
    np.save(tmp_path / "shard-00003.npy", np.zeros((4, 128), np.float16))  # reused, so its zeros show
    (tmp_path / "shard-00002.tmp.npy").write_bytes(b"\x93NUMPY half-written")  # never read

    eng = _engine(target, Sharding(size=4))
    out = eng.run(exs, _image_means, shard_dir=tmp_path, **kw)
    assert isinstance(out, np.memmap) and out.dtype == np.float16 and not out.flags.writeable
    assert not out[12:16].any()
    assert np.concatenate([out[:12], out[16:]]).tobytes() == np.concatenate([ref[:12], ref[16:]]).tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [MERGED]  # shards and leftovers removed once merged
    assert not eng.run(exs, _image_means, shard_dir=tmp_path, **kw)[12:16].any()  # a finished extraction is read

    stale = tmp_path / "stale"
    stale.mkdir()
    np.save(stale / "shard-00000.npy", np.zeros((3, 128), np.float16))
    with pytest.raises(ValueError, match=r"shard-00000\.npy holds float16 \(3, 128\), expected float16 \(4, 128\)"):
        eng.run(exs, _image_means, shard_dir=stale, **kw)
    with pytest.raises(ValueError, match="needs a shard_dir"):
        _engine(target, Sharding(rank=0, world=2, size=4)).run(exs, _image_means, **kw)


def test_float16_overflow_names_the_shard(target, small_pool) -> None:
    eng = _engine(target, Sharding(size=2))
    huge = lambda batch, cap: np.full((len(batch.input_ids), 3), 1e5, np.float32)  # noqa: E731
    with pytest.raises(ValueError, match=r"shard 0 \(examples 0\.\.1\): a feature of magnitude 1e\+05 overflows"):
        eng.run(examples(small_pool, [0, 1, 2]), huge, n_blocks=1, dtype=FEATURE_DTYPE)


def test_rank_processes_report_a_dead_rank_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('boom in rank', sys.argv[1]); sys.exit(3)"]
    with pytest.raises(RankError, match=r"(?s)rank 1 of 2 \(pid \d+\) exited with code 3.*boom in rank 1.*shard-9"):
        with RankProcesses(argv, 2, tmp_path) as ranks:
            wait_for([tmp_path / "shard-9.npy"], ranks.dead_peer)
    with pytest.raises(RankError, match="rank 1 of 2 .* code 3"):
        with RankProcesses(argv, 2, tmp_path):
            pass  # rank 0's part done: leaving waits for the others, and one failed


def test_rank_devices(monkeypatch) -> None:
    assert rank_device("cuda:3", 0, 1) == "cuda:3" and rank_device(None, 0, 1) is None
    assert rank_device("cpu", 1, 2) == "cpu"
    with pytest.raises(ValueError, match="names one device"):
        rank_device("cuda:1", 0, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [rank_device(d, r, 2) for d in (None, "cuda") for r in (0, 1)] == ["cuda:0", "cuda:1"] * 2
    with pytest.raises(ValueError, match="3 score workers need 3 GPUs; this job sees 2"):
        rank_device("cuda", 0, 3)


def test_workers_enter_the_job_key_only_when_set(small_world: Path, manifest: Path, tmp_path: Path) -> None:
    assert "workers" not in _config(small_world, 1).canonical()
    assert _config(small_world, 2).canonical()["workers"] == 2
    random = ScoreConfig(selector="random", impl=None, config={}, device=None, batch_size=4, workers=2)
    meta = score(random, manifest, tmp_path)  # no extraction to share: one process, and it says so
    assert any("does not split its work" in note for note in meta["notes"])


# ---------------------------------------------------------------- selection math on memory-mapped float16

def test_selection_math_reads_memory_mapped_float16_in_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, d = 9000, 24  # three blocks of rows
    x = (rng.normal(size=(n, 6)) @ rng.normal(size=(6, d)) + 0.3 * rng.normal(size=(n, d)) + 2.0).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    for centering in ("row", "corpus"):
        # float16 → float64 is exact, so memory-mapped half precision gives exactly the float64 numbers
        assert redundancy_scores(mapped, centering).tobytes() == redundancy_scores(x.astype(np.float64),
                                                                                   centering).tobytes()
        # one feature row standing for several pool rows (PRISM's unique images) = those rows repeated
        counts = rng.integers(1, 4, size=300)
        np.testing.assert_allclose(redundancy_scores(x[:300], centering, counts),
                                   redundancy_scores(np.repeat(x[:300], counts, axis=0), centering)[
                                       np.cumsum(counts) - 1], rtol=1e-10, atol=1e-13)
    # ScalSelect: float32 products inside a block for float16 input; float64 for anything else
    lev16, k16 = leverage_scores(mapped, 0.9)
    lev64, k64 = leverage_scores(x.astype(np.float64), 0.9)
    assert k16 == k64
    np.testing.assert_allclose(lev16, lev64, rtol=1e-4)
    top = 900
    assert len(set(np.argsort(-lev16)[:top]) & set(np.argsort(-lev64)[:top])) >= top - 2

"""The embedded world's data: deterministic, large and varied enough for selection to matter."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from selbench.pool import world
from selbench.pool.llava import read_pool


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    world.generate(tmp_path / "a", seed=7)
    world.generate(tmp_path / "b", seed=7)
    world.generate(tmp_path / "c", seed=8)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a["pool/pool.json"] != c["pool/pool.json"]


def test_pool_shape(tmp_path: Path) -> None:
    world.generate(tmp_path, seed=0)
    rep = read_pool(tmp_path / "pool" / "pool.json")
    assert rep.n_kept >= 3000 and not rep.issues
    skills = Counter(s.extra["skill"] for s in rep.samples)
    assert set(skills) == set(world.POOL_SKILLS)
    assert skills.most_common(1)[0][0] == "color"  # skewed mix
    assert skills["text"] > 0 and all(s.image is None for s in rep.samples if s.extra["skill"] == "text")
    assert any(len(s.turns) >= 4 for s in rep.samples)
    # several rows share one image (PRISM's per-image cache matters) and ids repeat
    per_image = Counter(s.image for s in rep.samples if s.image)
    assert max(per_image.values()) >= 3
    assert len({s.uid for s in rep.samples}) == rep.n_kept > len({s.source_id for s in rep.samples})
    # the <image> tag sits after the question in some rows
    raw = json.loads((tmp_path / "pool" / "pool.json").read_text())
    assert any(r["conversations"][0]["value"].endswith("<image>") for r in raw if "image" in r)
    # near-duplicates: some distinct image files are captioned identically (same scene, jittered)
    caps = Counter(r["conversations"][1]["value"]
                   for r in json.loads((tmp_path / "pool" / "captions.json").read_text()))
    assert caps.most_common(1)[0][1] >= 5


def test_benchmarks(tmp_path: Path) -> None:
    world.generate(tmp_path, seed=0, n_samples=3000, n_bench=50)
    for spec in world.BENCHMARKS:
        rows = pq.read_table(tmp_path / "benchmarks" / f"{spec.name}.parquet").to_pylist()
        assert len(rows) == 50 and len({r["question_id"] for r in rows}) == 50
        assert all(r["image"][:4] == b"\x89PNG" for r in rows)
    pope = pq.read_table(tmp_path / "benchmarks" / "emb_pope.parquet").to_pylist()
    assert 15 <= sum(r["answer"] == "yes" for r in pope) <= 35
    mc = pq.read_table(tmp_path / "benchmarks" / "emb_mc.parquet").to_pylist()
    assert {r["answer"] for r in mc} <= set(world.LETTERS) == set("ABCDEF")


def test_noise_sets_the_share_of_flipped_labels_and_leaves_the_benchmarks_clean(tmp_path: Path) -> None:
    shares = {}
    for noise in (0.0, 0.3):
        world.generate(tmp_path / str(noise), seed=0, n_samples=3000, n_bench=50, noise=noise)
        truth = json.loads((tmp_path / str(noise) / "pool" / world.TRUTH).read_text())["rows"]
        shares[noise] = sum(t["noisy"] for t in truth) / len(truth)
        assert json.loads((tmp_path / str(noise) / "world.json").read_text())["noise"] == noise
    assert shares[0.0] == 0
    # a row is noisy when any of its turns is (multi-turn rows have 2-3): a little over the per-turn rate
    assert 0.27 <= shares[0.3] <= 0.36, shares
    a, b = _digest(tmp_path / "0.0" / "benchmarks"), _digest(tmp_path / "0.3" / "benchmarks")
    assert a == b  # the benchmarks do not depend on the pool's noise


def test_noise_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match=r"world noise must be in \[0, 1\): got 1.0"):
        world.generate(tmp_path, seed=0, noise=1.0)
    assert not (tmp_path / "pool" / "pool.json").exists()

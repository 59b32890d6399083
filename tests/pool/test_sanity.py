"""The sanity references: subsets chosen with the embedded world's ground truth (pool/truth.json)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from selbench.pool import sanity, world
from selbench.pool.manifest import manifest_from_pool


@pytest.fixture(scope="module")
def truth(small_world: Path) -> list[dict]:
    pool, _ = manifest_from_pool(small_world / "pool" / "pool.json")
    return sanity.load_truth(small_world / "pool" / world.TRUTH, pool)


def test_the_ground_truth_matches_the_pool_rows(small_world: Path, truth: list[dict]) -> None:
    rows = json.loads((small_world / "pool" / "pool.json").read_text())
    assert len(truth) == len(rows)
    assert [t["skill"] for t in truth] == [r["skill"] for r in rows]
    assert [t["id"] for t in truth] == [r["id"] for r in rows]
    assert all((t["scene"] == -1) == ("image" not in r) for t, r in zip(truth, rows))
    noisy = sum(t["noisy"] for t in truth)
    assert 0 < noisy < 0.25 * len(truth)  # some labels were flipped, most were not


def test_oracle_is_clean_on_benchmark_balanced_and_without_near_duplicates(truth: list[dict]) -> None:
    k = 60
    idx = sanity.subset(sanity.ORACLE, truth, k, seed=0)
    assert len(idx) == k == len(set(idx.tolist())) and list(idx) == sorted(idx)
    chosen = [truth[i] for i in idx]
    assert not any(t["noisy"] for t in chosen)
    assert all(t["skill"] in sanity.BENCHMARK_OF for t in chosen)  # no off-benchmark (text) rows
    shares = Counter(sanity.BENCHMARK_OF[t["skill"]] for t in chosen)
    assert set(shares) == {b.name for b in world.BENCHMARKS} and max(shares.values()) - min(shares.values()) <= 1
    for bench in shares:  # a scene repeats within a benchmark only once every available scene is used
        scenes = Counter(t["scene"] for t in chosen if sanity.BENCHMARK_OF[t["skill"]] == bench)
        available = {t["scene"] for t in truth if not t["noisy"] and sanity.BENCHMARK_OF.get(t["skill"]) == bench}
        if max(scenes.values()) > 1:
            assert set(scenes) == available, bench


def test_anti_oracle_takes_noisy_then_off_benchmark_rows_first(truth: list[dict]) -> None:
    noisy = [i for i, t in enumerate(truth) if t["noisy"]]
    text = [i for i, t in enumerate(truth) if t["skill"] == "text"]
    idx = sanity.subset(sanity.ANTI_ORACLE, truth, len(noisy) + len(text) + 5, seed=0).tolist()
    assert set(noisy) | set(text) <= set(idx)
    small = sanity.subset(sanity.ANTI_ORACLE, truth, len(noisy), seed=0).tolist()
    assert small == sorted(noisy)


def test_deterministic_per_seed_and_seed_dependent(truth: list[dict]) -> None:
    for kind in sanity.KINDS:
        a, b = sanity.subset(kind, truth, 80, seed=1), sanity.subset(kind, truth, 80, seed=1)
        assert np.array_equal(a, b)
    assert not np.array_equal(sanity.subset(sanity.ORACLE, truth, 80, seed=1),
                              sanity.subset(sanity.ORACLE, truth, 80, seed=2))


def test_bad_input_is_named(small_world: Path, truth: list[dict], tmp_path: Path) -> None:
    pool, _ = manifest_from_pool(small_world / "pool" / "pool.json")
    old = tmp_path / "truth.json"
    old.write_text(json.dumps({"world_version": world.WORLD_VERSION - 1, "rows": []}))
    with pytest.raises(sanity.SanityError, match=r"truth\.json.*version"):
        sanity.load_truth(old, pool)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"world_version": world.WORLD_VERSION, "rows": truth[:3]}))
    with pytest.raises(sanity.SanityError, match="no ground truth for pool row 3"):
        sanity.load_truth(short, pool)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"world_version": world.WORLD_VERSION,
                                 "rows": [{**truth[0], "id": "someone-else"}, *truth[1:]]}))
    with pytest.raises(sanity.SanityError, match="pool row 0 has id .* not the embedded world's"):
        sanity.load_truth(other, pool)
    with pytest.raises(sanity.SanityError, match="unreadable"):
        sanity.load_truth(tmp_path / "missing.json", pool)
    with pytest.raises(sanity.SanityError, match="unknown sanity reference 'genie'"):
        sanity.subset("genie", truth, 3, seed=0)
    with pytest.raises(sanity.SanityError, match="budget of 100000"):
        sanity.subset(sanity.ORACLE, truth, 100000, seed=0)

"""A fixed pool stays fixed: a spec may pin the pool's fingerprint; a run whose pool differs fails in the prepare
stage (before any GPU work) saying how many rows/images differ; an unpinned spec keeps its job ids."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from selbench.harness.contracts import PrepareConfig
from selbench.harness.stages import prepare
from selbench.harness.store import Job, Store
from selbench.pool.errors import PoolError
from selbench.pool.manifest import manifest_from_pool, save_manifest


def _job(pool: Path, **pinned: str) -> Job:
    cfg = PrepareConfig(pool=str(pool), images=str(pool.parent), strict=False, file="x", **pinned)
    return Job("prepare", cfg.canonical())


def test_a_pinned_pool_that_changed_fails_before_any_gpu_work(small_world: Path, tmp_path: Path) -> None:
    src = small_world / "pool"
    fixed, _ = manifest_from_pool(src / "pool.json")
    reference = save_manifest(fixed, tmp_path / "fixed.parquet")
    store = Store(tmp_path / "store")
    # unchanged: passes with the full fingerprint or a 12-digit abbreviation
    for pin in (fixed.content_hash, fixed.content_hash[:12]):
        out = tmp_path / f"ok-{len(pin)}"
        out.mkdir()
        assert prepare.run(_job(src / "pool.json", fingerprint=pin), store, out)["content_hash"] == fixed.content_hash
    # the pool lost three rows and had one answer edited (as a dead link or a fixed typo would)
    rows = json.loads((src / "pool.json").read_text())
    rows = rows[3:]
    rows[10]["conversations"][1]["value"] += " (edited)"
    changed = tmp_path / "pool" / "pool.json"
    shutil.copytree(src, changed.parent, ignore=shutil.ignore_patterns("pool.json", "captions.json"))
    changed.write_text(json.dumps(rows))
    with pytest.raises(PoolError, match=rf"pool fingerprint mismatch .*expected {fixed.content_hash[:12]}.*"
                                        rf"{len(rows):,} rows"):
        prepare.run(_job(changed, fingerprint=fixed.content_hash[:12]), store, (tmp_path / "bad1"))
    with pytest.raises(PoolError, match=r"Compared with the reference .*fixed\.parquet") as e:
        prepare.run(_job(changed, fingerprint=fixed.content_hash, reference_manifest=str(reference)), store,
                    (tmp_path / "bad2"))
    # counted by compare_pools: rows gone or changed (repeated ids renumber), no image differs
    assert re.search(r"\d+ rows differ \(\d+ added, [3-9] removed, [1-9] changed\)", str(e.value)), str(e.value)
    assert "0 images differ" in str(e.value)


def test_pinning_is_in_the_prepare_key_only_when_given() -> None:
    plain = PrepareConfig(pool="p.json", images=None, strict=False, file="f").canonical()
    pinned = PrepareConfig(pool="p.json", images=None, strict=False, file="f", fingerprint="abc" * 4).canonical()
    assert "fingerprint" not in plain and pinned["fingerprint"] == "abc" * 4

"""Streaming preparation: same pool → byte-identical manifest (any worker count, cold or warm cache, JSON or
JSONL); the image-check cache; header vs full-decode checks; the content hash formula of manifest version 1."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from selbench.pool import images as image_checks
from selbench.pool import scan, world
from selbench.pool.llava import read_pool
from selbench.pool.manifest import manifest_from_pool, save_manifest


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """60 rows on 40 image paths (some shared, one missing, one truncated), ids repeating, a few text-only rows."""
    img = tmp_path / "images" / "coco"
    img.mkdir(parents=True)
    for k in range(40):
        Image.new("RGB", (16, 16), (k * 6, 255 - k * 6, 40)).save(img / f"{k:03d}.jpg")
    full = img / "039.jpg"
    Image.effect_noise((64, 64), 30).convert("RGB").save(full)
    full.write_bytes(full.read_bytes()[:-200])
    rows = []
    for i in range(60):
        k = i % 41  # 040.jpg does not exist
        conv = [{"from": "human", "value": f"<image>\nQuestion {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]
        if i % 13 == 5:
            rows.append({"id": f"t{i}", "conversations": [{"from": "human", "value": f"Q{i}?"}, conv[1]]})
        else:
            rows.append({"id": str(k % 17), "image": f"coco/{k:03d}.jpg", "conversations": conv})
    (tmp_path / "pool.json").write_text(json.dumps(rows, indent=1))
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use worker processes even for a small pool: many small segments (most of them speculative), small image
    batches."""
    monkeypatch.setattr(image_checks, "BATCH", 3)
    monkeypatch.setattr(scan, "PARALLEL_FROM_BYTES", 0)
    monkeypatch.setattr(scan, "SEGMENT_BYTES", (97, 300))


def _manifest_bytes(pool_file: Path, images: Path, out: Path, **kw) -> tuple[bytes, dict]:
    m, rep = manifest_from_pool(pool_file, images, **kw)
    save_manifest(m, out)
    return out.read_bytes(), rep.stats


def test_same_manifest_for_any_worker_count_and_cache_state(pool: Path, tmp_path: Path, small_batches) -> None:
    cache = tmp_path / "cache"
    one, s1 = _manifest_bytes(pool / "pool.json", pool / "images", tmp_path / "1.parquet", workers=1)
    two, s2 = _manifest_bytes(pool / "pool.json", pool / "images", tmp_path / "2.parquet", workers=2,
                              image_cache=cache)
    warm, s3 = _manifest_bytes(pool / "pool.json", pool / "images", tmp_path / "3.parquet", workers=2,
                               image_cache=cache)
    jsonl, _ = _manifest_bytes(pool / "pool.jsonl", pool / "images", tmp_path / "4.parquet", workers=2,
                               image_cache=cache)
    assert one == two == warm
    assert s1["workers"] == 1 and s2["workers"] == 2
    assert s2["unique_images"] == 40 and s2["images_cached"] == 0  # (031.jpg only in a text-only row)
    assert s3["images_cached"] == 39  # every existing image (the missing one is never cached)
    assert not s2["rows_cached"] and s3["rows_cached"]  # parsed rows too
    assert (cache / image_checks.CACHE_FILE).is_file()
    # JSONL: same rows, same manifest except the recorded source path
    import pyarrow.parquet as pq

    a, b = pq.read_table(tmp_path / "1.parquet"), pq.read_table(tmp_path / "4.parquet")
    assert a.equals(b) and a.schema.metadata[b"selbench.content_hash"] == b.schema.metadata[b"selbench.content_hash"]


def test_bad_images_are_issues_with_rows_in_order(pool: Path, small_batches) -> None:
    rep = read_pool(pool / "pool.json", pool / "images", workers=2)
    assert [i.row for i in rep.issues] == sorted(i.row for i in rep.issues)
    reasons = {i.reason.split(":")[0] + ":" + i.reason.rsplit(":", 1)[-1] for i in rep.issues}
    assert any("file not found" in i.reason and i.reason.endswith("coco/040.jpg") for i in rep.issues)
    assert any("truncated: no JPEG end-of-image marker" in i.reason for i in rep.issues), reasons
    assert rep.n_kept + len(rep.issues) == rep.n_rows == 60


def test_changed_image_is_rechecked_and_changes_the_fingerprint(pool: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    m1, _ = manifest_from_pool(pool / "pool.json", pool / "images", image_cache=cache)
    target = pool / "images" / "coco" / "003.jpg"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(target)
    os.utime(target, ns=(1, 1))  # even with an old mtime: the size or the mtime differs from the cached entry
    m2, rep = manifest_from_pool(pool / "pool.json", pool / "images", image_cache=cache)
    assert rep.stats["images_cached"] == 38
    assert m1.content_hash != m2.content_hash
    row = m2.frame.index[m2.frame["image"] == "coco/003.jpg"][0]
    assert m2.frame["image_sha256"].iat[row] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_unusable_cache_is_reported_not_fatal(pool: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cache.sqlite"
    bad.write_text("this is not a database")
    m, rep = manifest_from_pool(pool / "pool.json", pool / "images", image_cache=bad)
    assert "not usable" in rep.stats["cache_error"]
    assert m.content_hash == manifest_from_pool(pool / "pool.json", pool / "images")[0].content_hash


def test_header_check_by_default_full_decode_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import ImageFile

    # lmms-eval turns this on at import (the whole suite imports it): the full decode must still fail
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # seeded: the same bytes
    Image.fromarray(pixels).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 10: idat + 200] = b"\xff" * 190  # an invalid deflate stream; header and IEND intact
    (tmp_path / "bad.png").write_bytes(bytes(data))
    rows = [{"id": "b", "image": "bad.png", "conversations": [{"from": "human", "value": "<image>\nQ?"},
                                                                {"from": "gpt", "value": "A"}]}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    assert read_pool(tmp_path / "p.json").n_kept == 1
    rep = read_pool(tmp_path / "p.json", decode_images=True)
    assert rep.n_kept == 0 and rep.issues[0].reason.startswith("image: cannot decode")


def test_content_hash_formula_is_manifest_version_1(tmp_path: Path) -> None:
    """The streamed manifest's hash equals the formula every existing manifest was keyed by."""
    world.generate(tmp_path, seed=5, n_samples=300, n_bench=5)
    m, rep = manifest_from_pool(tmp_path / "pool" / "pool.json")
    h = hashlib.sha256(b"selbench-manifest-v1")
    for s in rep.samples:
        h.update(json.dumps([s.uid, s.image, s.image_sha256, s.turns], ensure_ascii=False).encode())
    assert m.content_hash == h.hexdigest()
    assert list(m.frame.columns) == ["index", "uid", "source_id", "row", "image", "image_sha256", "turns",
                                     "n_turns", "skill"]
    assert m.frame["image_sha256"].notna().sum() == m.has_image.sum()
    for s in rep.samples[:50]:
        if s.image:
            assert s.image_sha256 == hashlib.sha256((tmp_path / "pool" / s.image).read_bytes()).hexdigest()


def _tricky_pool(tmp_path: Path) -> None:
    """Rows that mislead a speculative segment: text holding ``, {`` and whole fake rows, non-object rows,
    multi-byte characters, a row that is not UTF-8, a row nested too deeply, long rows."""
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    fake = ', {"id": "fake", "conversations": []}, {"id": "fake2"}'
    parts = []
    for i in range(40):
        conv = [{"from": "human", "value": f"<image>\nQ{i} — 東京 {fake if i % 3 == 0 else ''}?"},
                {"from": "gpt", "value": ("ä" * (i * 7)) + f" A{i}"}]
        parts.append(json.dumps({"id": str(i % 9), "image": "a.png", "conversations": conv},
                                ensure_ascii=i % 2 == 0).encode())
        if i % 11 == 4:
            parts.append(b"42")
        if i == 17:
            parts.append(b'{"id": "bad\xff", "conversations": []}')
        if i == 23:
            parts.append(b"[" * 2000 + b"]" * 2000)
    (tmp_path / "pool.json").write_bytes(b"[\n" + b",\n  ".join(parts) + b"\n]\n")
    (tmp_path / "pool.jsonl").write_bytes(b"\n".join(parts) + b"\n")


@pytest.mark.parametrize("name", ["pool.json", "pool.jsonl"])
def test_segments_give_the_one_pass_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    _tricky_pool(tmp_path)
    one = read_pool(tmp_path / name, workers=1)
    assert one.stats["workers"] == 1 and one.n_rows == 46 and len(one.issues) == 6
    monkeypatch.setattr(scan, "PARALLEL_FROM_BYTES", 0)
    for size in (41, 173, 1000):
        monkeypatch.setattr(scan, "SEGMENT_BYTES", (size, size))
        many = read_pool(tmp_path / name, workers=2)
        assert many.stats["workers"] == 2
        assert many.issues == one.issues, size
        assert many.table.equals(one.table), size


def test_rows_cache_follows_the_pool_file(pool: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = read_pool(pool / "pool.json", pool / "images", image_cache=cache)
    again = read_pool(pool / "pool.json", pool / "images", image_cache=cache)
    assert again.stats["rows_cached"] and again.issues == first.issues and again.table.equals(first.table)
    assert [s.turns for s in again.samples] == [s.turns for s in first.samples]
    rows = json.loads((pool / "pool.json").read_text())
    rows[0]["conversations"][1]["value"] = "Edited."
    (pool / "pool.json").write_text(json.dumps(rows, indent=1))
    edited = read_pool(pool / "pool.json", pool / "images", image_cache=cache)
    assert not edited.stats["rows_cached"] and edited.samples[0].turns[1] == ("assistant", "Edited.")
    files = list(cache.glob("pool-rows-*.arrow"))
    assert len(files) == 1  # one per pool path: the edit replaced the earlier parse
    files[0].write_bytes(b"damaged")
    damaged = read_pool(pool / "pool.json", pool / "images", image_cache=cache)
    assert not damaged.stats["rows_cached"] and damaged.table.equals(edited.table)

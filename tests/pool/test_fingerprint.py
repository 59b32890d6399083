"""Fixed pools: the fingerprint names exactly what changed, and a mismatch is a PoolError that says how much."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from selbench.pool.errors import PoolError
from selbench.pool.fingerprint import check_fingerprint, compare_pools
from selbench.pool.manifest import manifest_from_pool, save_manifest


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "image": f"img/{i % 5}.png",
             "conversations": [{"from": "human", "value": f"<image>\nQ{i}?"}, {"from": "gpt", "value": f"A{i}"}]}
            for i in range(n)]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for k in range(6):
        Image.new("RGB", (4, 4), (k * 40, 0, 0)).save(tmp_path / "img" / f"{k}.png")
    (tmp_path / "a.json").write_text(json.dumps(_rows(10)))
    return tmp_path


def _manifest(root: Path, rows: list[dict], name: str):
    (root / name).write_text(json.dumps(rows))
    return manifest_from_pool(root / name, root)[0]


def test_identical_pools(base: Path) -> None:
    a = manifest_from_pool(base / "a.json")[0]
    b = _manifest(base, json.loads((base / "a.json").read_text()), "b.json")  # another file, same rows
    d = compare_pools(a, b)
    assert d.identical and d.rows_differing == d.images_differing == 0
    check_fingerprint(b, a.content_hash)
    check_fingerprint(b, a.content_hash[:12].upper())  # abbreviated, as `pool check` prints it
    check_fingerprint(b, "sha256:" + a.content_hash)


def test_counts_rows_and_images_that_differ(base: Path, tmp_path: Path) -> None:
    a = manifest_from_pool(base / "a.json")[0]
    rows = _rows(10)
    rows[2]["conversations"][1]["value"] = "changed"  # 1 row changed
    del rows[7]  # 1 row removed
    rows.append({"id": "new", "image": "img/5.png", "conversations": rows[0]["conversations"]})  # 1 added, 1 image
    b = _manifest(base, rows, "b.json")
    d = compare_pools(a, b)
    assert (d.rows_added, d.rows_removed, d.rows_changed, d.order_changed) == (1, 1, 1, False)
    assert (d.images_added, d.images_removed, d.images_changed) == (1, 0, 0)
    assert "3 rows differ (1 added, 1 removed, 1 changed); 1 images differ" in str(d)
    # an image's bytes change: every row on it changes, and the image counts as changed
    Image.new("RGB", (4, 4), (9, 9, 9)).save(base / "img" / "1.png")
    c = manifest_from_pool(base / "a.json")[0]
    d = compare_pools(a, c)
    assert (d.rows_changed, d.images_changed, d.rows_added) == (2, 1, 0)
    # reordered rows: same rows, other indices — the fingerprint changes and the diff says why
    save_manifest(c, tmp_path / "c.parquet")
    r = _manifest(base, list(reversed(json.loads((base / "a.json").read_text()))), "r.json")
    d = compare_pools(tmp_path / "c.parquet", r)
    assert not d.identical and d.rows_differing == 0 and d.order_changed and "reordered" in str(d)


def test_check_fingerprint_messages(base: Path, tmp_path: Path) -> None:
    a = manifest_from_pool(base / "a.json")[0]
    save_manifest(a, tmp_path / "ref.parquet")
    rows = _rows(10)
    rows[4]["conversations"][1]["value"] = "other"
    b = _manifest(base, rows, "b.json")
    with pytest.raises(PoolError) as e:
        check_fingerprint(b, a.content_hash, reference=tmp_path / "ref.parquet")
    msg = str(e.value)
    assert a.content_hash in msg and b.content_hash in msg
    assert "1 rows differ (0 added, 0 removed, 1 changed); 0 images differ" in msg
    with pytest.raises(PoolError) as e:
        check_fingerprint(b, a.content_hash)
    msg = str(e.value)
    assert a.content_hash in msg and b.content_hash in msg and "differs" in msg and "10 rows" in msg
    for bad in ("", "abc", "z" * 64, "0" * 65):
        with pytest.raises(PoolError, match="not a pool fingerprint"):
            check_fingerprint(b, bad)

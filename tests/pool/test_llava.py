"""The LLaVA reader on real files with every quirk of real pools."""

import json
from pathlib import Path

import pytest
from PIL import Image

from selbench.pool.llava import PoolError, read_pool
from selbench.pool.manifest import build_manifest, load_manifest, save_manifest


def _png(path: Path, color=(255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _conv(*pairs):
    out = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", (0, 255, 0))
    good = tmp_path / "img" / "c.png"
    _png(good)
    # A corrupt PNG: a valid header followed by garbage, so the file opens but cannot be decoded.
    (tmp_path / "img" / "corrupt.png").write_bytes(good.read_bytes()[:40] + b"\x00garbage" * 10)
    rows = [
        {"id": "1", "image": "img/a.png", "conversations": _conv(("<image>\nWhat color?", "red"))},
        # same id again (LLaVA-665K repeats COCO ids), and <image> after the text
        {"id": "1", "image": "img/a.png", "conversations": _conv(("Is it red?\n<image>", "yes"))},
        {"id": "1", "image": "img/b.png", "conversations": _conv(("<image>\nColor?", "green"))},
        # text-only row
        {"id": "t1", "conversations": _conv(("What is 2 plus 2?", "4"))},
        # multi-turn
        {"id": "m1", "image": "img/c.png",
         "conversations": _conv(("<image>\nColor?", "red"), ("Shape?", "square"), ("Count?", "1"))},
        {"id": "bad-missing", "image": "img/nope.png", "conversations": _conv(("<image>\nQ?", "A"))},
        {"id": "bad-corrupt", "image": "img/corrupt.png", "conversations": _conv(("<image>\nQ?", "A"))},
        {"id": "bad-speaker", "image": "img/a.png",
         "conversations": [{"from": "robot", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]},
        {"id": "bad-notag", "image": "img/a.png", "conversations": _conv(("Q?", "A"))},
        {"id": "bad-tag-textonly", "conversations": _conv(("<image>\nQ?", "A"))},
        {"id": "bad-empty", "image": "img/a.png", "conversations": []},
        {"image": "img/a.png", "conversations": _conv(("<image>\nQ?", "A"))},
    ]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    return tmp_path


def test_reads_every_quirk_and_reports_every_bad_row(pool_dir: Path) -> None:
    rep = read_pool(pool_dir / "pool.json")
    assert rep.n_rows == 12
    assert [s.source_id for s in rep.samples] == ["1", "1", "1", "t1", "m1"]
    reasons = {i.id: i.reason for i in rep.issues}
    assert set(reasons) == {"bad-missing", "bad-corrupt", "bad-speaker", "bad-notag", "bad-tag-textonly",
                            "bad-empty", None}
    assert reasons["bad-missing"].startswith("image: file not found")
    assert reasons["bad-corrupt"].startswith("image: cannot decode")
    assert "unknown speaker" in reasons["bad-speaker"]
    assert "exactly one <image>" in reasons["bad-notag"]
    assert "without an image" in reasons["bad-tag-textonly"]
    assert "missing or empty" in reasons["bad-empty"]
    assert reasons[None] == "id: missing"
    assert [i.row for i in rep.issues] == [5, 6, 7, 8, 9, 10, 11]


def test_unique_ids_are_stable_and_image_tag_moved(pool_dir: Path) -> None:
    rep = read_pool(pool_dir / "pool.json")
    uids = [s.uid for s in rep.samples]
    assert uids == ["1::img/a.png#0", "1::img/a.png#1", "1::img/b.png#0", "t1", "m1"]
    assert len(set(uids)) == len(uids)
    assert rep.samples[1].turns[0] == ("user", "Is it red?")  # tag after the text, removed
    assert rep.samples[3].image is None and not rep.samples[3].has_image
    assert len(rep.samples[4].turns) == 6
    assert read_pool(pool_dir / "pool.json").samples == rep.samples


def test_strict_mode_fails_and_names_rows(pool_dir: Path) -> None:
    with pytest.raises(PoolError) as e:
        read_pool(pool_dir / "pool.json", strict=True)
    msg = str(e.value)
    assert "7 bad rows" in msg and "row 6 (id='bad-corrupt')" in msg


def test_jsonl_with_a_broken_line(pool_dir: Path) -> None:
    rows = json.loads((pool_dir / "pool.json").read_text())[:4]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"id": "x", "conversations": [')
    (pool_dir / "pool.jsonl").write_text("\n".join(lines) + "\n")
    rep = read_pool(pool_dir / "pool.jsonl")
    assert len(rep.samples) == 4
    assert len(rep.issues) == 1 and rep.issues[0].row == 2 and "invalid JSON" in rep.issues[0].reason


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="not found"):
        read_pool(tmp_path / "none.json")
    (tmp_path / "obj.json").write_text('{"id": 1}')
    with pytest.raises(PoolError, match="expected a JSON list"):
        read_pool(tmp_path / "obj.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(PoolError, match="invalid JSON at line 1"):
        read_pool(tmp_path / "broken.json")


def test_manifest_round_trip_and_content_hash(pool_dir: Path, tmp_path: Path) -> None:
    m = build_manifest(read_pool(pool_dir / "pool.json"), pool_dir)
    assert list(m.frame["index"]) == list(range(5))
    assert m.has_image.tolist() == [True, True, True, False, True]
    save_manifest(m, tmp_path / "m.parquet")
    back = load_manifest(tmp_path / "m.parquet")
    assert back.content_hash == m.content_hash
    assert back.turns(4) == [("user", "Color?"), ("assistant", "red"), ("user", "Shape?"),
                             ("assistant", "square"), ("user", "Count?"), ("assistant", "1")]
    # a changed answer or a changed image changes the hash
    rows = json.loads((pool_dir / "pool.json").read_text())
    rows[0]["conversations"][1]["value"] = "blue"
    (pool_dir / "pool2.json").write_text(json.dumps(rows))
    assert build_manifest(read_pool(pool_dir / "pool2.json"), pool_dir).content_hash != m.content_hash
    _png(pool_dir / "img" / "a.png", (1, 2, 3))
    assert build_manifest(read_pool(pool_dir / "pool.json"), pool_dir).content_hash != m.content_hash


def test_cli_pool_check(pool_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selbench.cli import app

    r = CliRunner().invoke(app, ["pool", "check", str(pool_dir / "pool.json"), "--manifest",
                                 str(tmp_path / "m.parquet"), "--report", str(tmp_path / "skipped.json")])
    assert r.exit_code == 0, r.output
    assert "12 rows, 5 kept, 7 skipped" in r.output and "bad-corrupt" in r.output
    assert len(json.loads((tmp_path / "skipped.json").read_text())) == 7
    assert load_manifest(tmp_path / "m.parquet").frame.shape[0] == 5
    r = CliRunner().invoke(app, ["pool", "check", str(pool_dir / "pool.json"), "--strict"])
    assert r.exit_code == 1 and "bad-missing" in r.output

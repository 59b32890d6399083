"""tools/pope_experiment.py: its world variants change only what they say (so a reused stage 1 is valid), leave the
generator as it was, and its AUC is the AUC."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from selbench.pool import world

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("pope_experiment", REPO / "tools" / "pope_experiment.py")
assert _spec and _spec.loader
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

N = 300


def _generate(out: Path, **variant) -> Path:
    with tool.world_variant(noise=0.3, **variant):
        world.generate(out, seed=0, n_samples=N, n_bench=20, noise=0.3)
    return out


def _images(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "pool" / "images").iterdir())}


def _rows(root: Path) -> list[dict]:
    return json.loads((root / "pool" / "pool.json").read_text())


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The world with the generator untouched."""
    out = tmp_path_factory.mktemp("plain")
    world.generate(out, seed=0, n_samples=N, n_bench=20, noise=0.3)
    return out


def test_the_default_variant_is_the_plain_world(tmp_path: Path, plain: Path) -> None:
    same = _generate(tmp_path / "default")
    assert _rows(same) == _rows(plain) and _images(same) == _images(plain)
    assert (same / "pool" / "captions.json").read_text() == (plain / "pool" / "captions.json").read_text()


def test_the_generator_is_restored_after_a_variant_and_after_a_refused_one(tmp_path: Path, plain: Path) -> None:
    before = dict(world.ASK), world.Scene.caption, world._wrong_answer
    _generate(tmp_path / "v", probe="color-shape", captions="grid", refer="position", yesno_noise=0.0)
    assert (dict(world.ASK), world.Scene.caption, world._wrong_answer) == before
    with pytest.raises(RuntimeError):
        _generate_failing(tmp_path / "f")
    assert (dict(world.ASK), world.Scene.caption, world._wrong_answer) == before
    for bad in ({"probe": "colour"}, {"captions": "dense"}, {"refer": "place"}):
        with pytest.raises(SystemExit, match=next(iter(bad))):
            _generate(tmp_path / "bad", **bad)
        assert (dict(world.ASK), world.Scene.caption, world._wrong_answer) == before
    again = world.generate(tmp_path / "again", seed=0, n_samples=N, n_bench=20, noise=0.3)
    assert again and _rows(tmp_path / "again") == _rows(plain)


def _generate_failing(out: Path) -> None:
    with tool.world_variant(noise=0.3, probe="color", captions="grid-shuffled", refer="position", yesno_noise=0.1):
        raise RuntimeError("a failure inside the block")


def test_clean_yes_no_labels_flip_back_exactly_the_noisy_yes_no_turns(tmp_path: Path, plain: Path) -> None:
    clean = _generate(tmp_path / "clean", yesno_noise=0.0)
    assert _images(clean) == _images(plain)  # the same images: a stage 1 trained on one serves the other
    truth = json.loads((plain / "pool" / world.TRUTH).read_text())["rows"]
    flipped = kept = 0
    for a, b, t in zip(_rows(plain), _rows(clean), truth, strict=True):
        turns_a, turns_b = a["conversations"], b["conversations"]
        assert len(turns_a) == len(turns_b)
        for k in range(0, len(turns_a), 2):
            assert turns_a[k] == turns_b[k]  # the same questions
            answer_a, answer_b = turns_a[k + 1]["value"], turns_b[k + 1]["value"]
            if "Is there an object at" not in turns_a[k]["value"]:
                assert answer_a == answer_b  # every other skill keeps its noise
            elif a["skill"] == "yesno" and t["noisy"]:
                assert {answer_a, answer_b} == {"yes", "no"}
                flipped += 1
            elif a["skill"] == "yesno":
                assert answer_a == answer_b
                kept += 1
            # a yes/no turn of a multi-turn row: its row's noisy flag does not say which turn was flipped
    assert flipped > 5 and kept > 5, (flipped, kept)


def test_questions_by_position_name_no_shape_and_keep_the_images(tmp_path: Path, plain: Path) -> None:
    by_position = _generate(tmp_path / "pos", refer="position")
    assert _images(by_position) == _images(plain)
    asked = [r["conversations"][0]["value"] for r in _rows(by_position) if r["skill"] in ("color", "mc")]
    assert asked and all(" the object at the " in q for q in asked)
    assert not any(f" the {s} at " in q for q in asked for s in world.SHAPES)
    before = [r["conversations"][0]["value"] for r in _rows(plain) if r["skill"] in ("color", "mc")]
    assert [tool._by_position(q) for q in before] == asked


def _captions(root: Path) -> list[str]:
    return [c["conversations"][1]["value"] for c in json.loads((root / "pool" / "captions.json").read_text())]


def test_grid_captions_name_every_cell_once_with_what_is_there(tmp_path: Path, plain: Path) -> None:
    orders = {}
    for form in ("grid", "grid-shuffled"):
        grid = _generate(tmp_path / form, captions=form)
        assert _images(grid) == _images(plain)
        orders[form] = set()
        for before, after in zip(_captions(plain), _captions(grid), strict=True):
            if before.startswith("the number"):
                assert after == before
                continue
            # "a red circle at the top left and a blue square at the bottom right." → {"top left": "a red circle", …}
            objects = dict(reversed(part.split(" at the ")) for part in before.rstrip(".").split(" and "))
            cells = dict(part.strip().split(": ") for part in after.rstrip(".").split(";"))
            assert sorted(cells) == sorted(world.POSITIONS), after
            assert cells == {p: objects.get(p, "empty") for p in world.POSITIONS}, (before, after)
            orders[form].add(tuple(part.split(":")[0].strip() for part in after.split(";")))
    assert orders["grid"] == {tuple(world.POSITIONS)}  # one fixed order
    assert len(orders["grid-shuffled"]) > 4  # orders drawn per scene


def test_auc() -> None:
    assert tool._auc(np.array([3.0, 2.0, 1.0, 0.0]), np.array([True, True, False, False])) == 1.0
    assert tool._auc(np.array([0.0, 1.0, 2.0, 3.0]), np.array([True, True, False, False])) == 0.0
    assert tool._auc(np.ones(4), np.array([True, False, True, False])) == 0.5
    assert tool._auc(np.array([2.0, 0.0, 1.0]), np.array([True, True, False])) == 0.5


def test_clean_yes_no_share_above_the_world_noise_is_refused() -> None:
    with pytest.raises(SystemExit, match="--yesno-noise"):
        with tool.world_variant(noise=0.1, yesno_noise=0.2):
            pass

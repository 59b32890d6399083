"""Cell cards: every number a card shows, recomputed here from the pool rows and the selections with plain Python
(Counter, sets, numpy percentiles) — on the demo-shaped pool (sources, text-only rows, repeated images, skills) and
on the real small run's store (the cards its report wrote, against its manifest and selection.txt files)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selbench.reports.cards import TEXT_ONLY, cell_cards, load_cards, random_jaccard
from selbench.reports.tables import load_run
from tests.reports.frames import DEMO_MISSING, demo_pool, demo_selections, demo_store


def expected(pool: pd.DataFrame, uids: list[str]) -> dict:
    """A subset's composition, the slow obvious way."""
    rows = pool.set_index("uid").loc[uids].to_dict("records")
    n = len(rows)
    has_image = [isinstance(r["image"], str) for r in rows]
    sources = Counter(r["image"].split("/")[0] if image else TEXT_ONLY for r, image in zip(rows, has_image))
    skills = Counter(r["skill"] for r in rows)
    shas = Counter(r["image_sha256"] for r, image in zip(rows, has_image) if image)
    texts = [" ".join(t for _, t in json.loads(r["turns"])).replace("<image>", "") for r in rows]
    return {"n": n, "text_only": has_image.count(False) / n,
            "repeated_image": sum(c for c in shas.values() if c > 1) / n,
            "source": {k: v / n for k, v in sources.items()}, "skill": {k: v / n for k, v in skills.items()},
            "chars": np.percentile([len(t) for t in texts], [25, 50, 75]),
            "words": np.percentile([len(t.split()) for t in texts], [25, 50, 75])}


def jaccard(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b))


def check(cards, pool: pd.DataFrame, selections: dict) -> None:
    for key, uids in selections.items():
        card = cards.card(*key)
        want = expected(pool, uids)
        got = card.profile
        assert got.n == want["n"] == len(uids)
        assert got.text_only == pytest.approx(want["text_only"])
        assert got.repeated_image == pytest.approx(want["repeated_image"])
        assert np.allclose(got.chars, want["chars"]) and np.allclose(got.words, want["words"])
        for facet, cats in cards.facets.items():
            for cat in cats:
                assert got.shares[facet][cat] == pytest.approx(want[facet].get(cat, 0.0)), (key, facet, cat)
        others = {k: v for k, v in selections.items() if k != key and k[1:] == key[1:]}
        assert set(card.jaccard) == {k[0] for k in others}
        for other, theirs in others.items():
            assert card.jaccard[other[0]] == pytest.approx(jaccard(uids, theirs))
    everything = expected(pool, list(pool["uid"]))
    assert cards.pool.n == len(pool) and cards.pool.text_only == pytest.approx(everything["text_only"])
    assert cards.pool.repeated_image == pytest.approx(everything["repeated_image"])


def test_cards_match_the_pool_computed_independently() -> None:
    pool = demo_pool()
    selections = demo_selections(pool)
    cards = cell_cards(pool, selections)
    assert set(cards.facets) == {"source", "skill"}  # three image folders and text-only rows; five skills
    assert set(cards.facets["source"]) == {"coco", "gqa", "ocr_vqa", TEXT_ONLY}
    check(cards, pool, selections)
    prism = cards.card("prism", "10%", 0)
    assert prism.profile.shares["source"]["coco"] > cards.pool.shares["source"]["coco"] + 0.2  # its coco bias shows
    length = cards.card("length", "10%", 0)
    assert length.profile.chars[0] > cards.pool.chars[2]  # the longest rows: its Q1 above the pool's Q3
    # the frame (CSV / JSON / parquet downloads): the pool first, then one row per cell
    frame = cards.frame()
    assert list(frame["selector"][:2]) == ["(pool)", "random"] and len(frame) == 1 + len(selections)
    row = frame[(frame["selector"] == "length") & (frame["budget"] == "10%")].iloc[0]
    assert row["jaccard: random"] == pytest.approx(jaccard(selections[("length", "10%", 0)],
                                                           selections[("random", "10%", 0)]))
    assert random_jaccard(100, 1000) == pytest.approx(100 / 1900)
    with pytest.raises(ValueError, match="not in the pool"):
        cell_cards(pool, {("x", "10%", 0): ["nope"]})


def test_cards_from_a_store_know_the_missing_cell(tmp_path: Path) -> None:
    run_dir = demo_store(tmp_path / "store")
    run = load_run(run_dir)
    cards, why = load_cards(run_dir, run.spec, run.board)
    assert why is None and cards is not None
    assert set(cards.missing) == {DEMO_MISSING} and "missing" in cards.missing[DEMO_MISSING]
    assert len(cards.cells) == 7 * 3 - 1


@pytest.mark.slow
def test_small_run_cards_match_its_store(small_run) -> None:
    """The cards the run's report wrote (report/data/cards.parquet) against the prepare job's manifest and each
    select job's selection.txt in the store."""
    store = Path(small_run["spec"]["store"]) / "jobs"
    board = pd.read_parquet(small_run["run_dir"] / "leaderboard.parquet")
    pool = pd.read_parquet(store / board["prepare_job"].dropna().iloc[0] / "manifest.parquet")
    written = pd.read_parquet(small_run["run_dir"] / "report" / "data" / "cards.parquet")
    cells = board[board["selector"] != "full"]
    selections = {(r.selector, r.budget, int(r.seed)): (store / r.select_job / "selection.txt").read_text().split()
                  for r in cells.itertuples()}
    assert len(written) == 1 + len(selections)
    for (sel, budget, seed), uids in selections.items():
        row = written[(written["selector"] == sel) & (written["budget"] == budget) & (written["seed"] == seed)]
        assert len(row) == 1, (sel, budget)
        row = row.iloc[0]
        want = expected(pool, uids)
        assert row["n"] == len(uids) and row["text_only"] == pytest.approx(want["text_only"])
        assert row["repeated_image"] == pytest.approx(want["repeated_image"])
        assert [row["chars_q1"], row["chars_median"], row["chars_q3"]] == pytest.approx(list(want["chars"]))
        for skill, share in want["skill"].items():
            assert row[f"skill: {skill}"] == pytest.approx(share)
        for (other, b2, s2), theirs in selections.items():
            if (b2, s2) == (budget, seed) and other != sel:
                assert row[f"jaccard: {other}"] == pytest.approx(jaccard(uids, theirs))
    page = (small_run["run_dir"] / "report" / "cards.html").read_text()
    assert page.count('id="card-') == len(selections)

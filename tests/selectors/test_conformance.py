"""Every registered selector (built-ins and plugins) against the selector contract on the embedded pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selbench.selectors import Budget, ScoringContext, SelectionError, available, get_selector
from selbench.selectors.scoring import score_cached, select

# Small but real configs for the tiny models: cluster counts and the proxy's layers scaled down.
TINY_CONFIGS = {
    "coincide": {"layers": [0, 1, 2, 3], "n_clusters": 8},
    "xmas": {"checkpoints": 3, "n_clusters": 4,
             "proxy_training": {"method": "full", "lr": 5e-4, "projector_lr": None, "batch_size": 16}},
}


def _ctx(small_world: Path, tmp: Path) -> ScoringContext:
    return ScoringContext(work_dir=tmp, target=small_world / "models" / "target",
                          proxy=small_world / "models" / "proxy", batch_size=32)


@pytest.fixture(scope="module")
def scored(small_world, small_pool, tmp_path_factory):
    cache = tmp_path_factory.mktemp("scores")
    out = {}
    for name in sorted(available()):
        sel = get_selector(name, TINY_CONFIGS.get(name))
        artifacts, meta = score_cached(sel, small_pool, _ctx(small_world, cache), cache)
        out[name] = (sel, artifacts, meta)
    return out


@pytest.mark.parametrize("name", sorted(available()))
def test_contract(name, scored, small_pool) -> None:
    sel, artifacts, meta = scored[name]
    n = len(small_pool)
    eligible = n if name != "scalselect" else int(small_pool.has_image.sum())
    for budget in ("10%", 0.3, 57):
        k = Budget.parse(budget).resolve(n)
        a, _ = select(sel, artifacts, budget, 1, n)
        b, _ = select(sel, artifacts, budget, 1, n)
        assert len(a) == k and len(np.unique(a)) == k
        assert a.min() >= 0 and a.max() < n
        assert a.tolist() == b.tolist(), "same seed must give the same subset"
    full, _ = select(sel, artifacts, eligible, 0, n)
    assert len(full) == eligible
    with pytest.raises(SelectionError):
        select(sel, artifacts, n + 1, 0, n)
    with pytest.raises(SelectionError):
        Budget.parse(0)
    assert meta["timings"], "scoring records its timings"


def test_scalselect_drops_text_rows_and_says_so(scored, small_pool) -> None:
    sel, artifacts, meta = scored["scalselect"]
    text_rows = set(np.flatnonzero(~small_pool.has_image.to_numpy()).tolist())
    assert text_rows and not text_rows & set(artifacts["rows"].tolist())
    assert any("without an image dropped" in note for note in meta["notes"])
    with pytest.raises(SelectionError, match="image rows"):
        select(sel, artifacts, int(small_pool.has_image.sum()) + 1, 0, len(small_pool))


def test_prism_computes_once_per_unique_image(scored, small_pool) -> None:
    _, artifacts, _ = scored["prism"]
    n_unique = small_pool.frame["image_sha256"].dropna().nunique()
    assert artifacts["image_features"].shape[0] == n_unique < int(small_pool.has_image.sum())


def test_random_depends_on_seed(scored, small_pool) -> None:
    sel, artifacts, _ = scored["random"]
    a, _ = select(sel, artifacts, 50, 0, len(small_pool))
    b, _ = select(sel, artifacts, 50, 1, len(small_pool))
    assert a.tolist() != b.tolist()


def test_rescoring_hits_the_cache(small_world, small_pool, tmp_path) -> None:
    sel = get_selector("prism")
    _, first = score_cached(sel, small_pool, _ctx(small_world, tmp_path), tmp_path)
    art, second = score_cached(sel, small_pool, _ctx(small_world, tmp_path), tmp_path)
    assert first["cached"] is False and second["cached"] is True
    other = get_selector("prism", {"centering": "corpus"})
    _, third = score_cached(other, small_pool, _ctx(small_world, tmp_path), tmp_path)
    assert third["cached"] is False


def test_unknown_selector_and_bad_config() -> None:
    with pytest.raises(SelectionError, match="unknown selector"):
        get_selector("nope")
    with pytest.raises(Exception, match="extra"):
        get_selector("prism", {"centring": "row"})

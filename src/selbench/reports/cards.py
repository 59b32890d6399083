"""Cell cards: what each selector picked, against the pool it picked from.

Per cell (selector, budget, seed) the composition of its subset next to the pool's: the source mix (the image's top
folder, e.g. ``coco`` or ``gqa`` in LLaVA-665K; text-only rows count as their own source) and the skill mix (the
pool's ``skill`` labels, which the embedded world carries), the share of text-only rows, the length distribution
(quartiles of characters and of words over all turns, the ``<image>`` placeholder left out), the share of rows whose
image repeats within the subset (same sha256: near-duplicates and several questions on one image), and the overlap
(Jaccard) with every other selector at the same budget and seed.

``cell_cards`` is pure (a pool frame and uid lists in, numbers out); ``load_cards`` finds both in the artifact store
by its file layout (``STORE/jobs/<job id>/…``, as the harness writes it: the reports read files, they never import
the harness)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from selbench.leaderboard import REFERENCE, UNTUNED

CellKey = tuple[str, str, int]  # (selector, budget, seed)
TEXT_ONLY = "text-only"
NO_SKILL = "(none)"
MAX_CATEGORIES = 12  # a facet shows its largest categories in the pool; the rest add up under OTHER
OTHER = "other"
# the store's layout (harness/store.py, harness/stages/{prepare,select}.py)
MANIFEST = "manifest.parquet"
SELECTION = "selection.txt"


@dataclass
class Profile:
    """The composition of a set of pool rows."""

    n: int
    shares: dict[str, dict[str, float]]  # facet ("source", "skill") → category → share of the rows (0–1)
    text_only: float  # share of rows without an image
    repeated_image: float  # share of rows whose image (sha256) appears more than once in the set
    chars: tuple[float, float, float]  # quartiles (numpy's linear percentiles 25, 50, 75) of characters per row
    words: tuple[float, float, float]  # the same for whitespace-separated words (≈ tokens)


@dataclass
class CellCard:
    selector: str
    budget: str
    seed: int
    profile: Profile
    jaccard: dict[str, float]  # every other selector at the same budget and seed → |A ∩ B| / |A ∪ B|


@dataclass
class Cards:
    pool: Profile
    cells: list[CellCard]
    facets: dict[str, list[str]]  # facet → its categories in display order (largest in the pool first)
    pool_size: int
    missing: dict[CellKey, str] = field(default_factory=dict)  # cells without a selection → why

    def card(self, selector: str, budget: str, seed: int) -> CellCard | None:
        return next((c for c in self.cells if (c.selector, c.budget, c.seed) == (selector, budget, seed)), None)

    def frame(self) -> pd.DataFrame:
        """One row for the pool and one per cell: n, shares (``source: coco`` …), text-only and repeated-image
        shares, length quartiles, and ``jaccard: <selector>`` columns."""
        others = list(dict.fromkeys(o for c in self.cells for o in c.jaccard))
        rows = [_record(REFERENCE_POOL, "100%", None, self.pool, self.facets, {}, others)]
        rows += [_record(c.selector, c.budget, c.seed, c.profile, self.facets, c.jaccard, others) for c in self.cells]
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        return json.dumps({
            "pool": _profile_json(self.pool), "pool_size": self.pool_size, "facets": self.facets,
            "cells": [{"selector": c.selector, "budget": c.budget, "seed": c.seed, **_profile_json(c.profile),
                       "jaccard": c.jaccard} for c in self.cells],
            "missing": [{"selector": k[0], "budget": k[1], "seed": k[2], "reason": v} for k, v in self.missing.items()],
        }, indent=1)


REFERENCE_POOL = "(pool)"  # the pool's row in the cards frame (its seed is empty)


def random_jaccard(k: int, n: int) -> float:
    """The expected Jaccard of two independent uniform subsets of ``k`` of ``n`` rows: overlap k²/n over the
    union 2k − k²/n, i.e. k / (2n − k). What two unrelated selectors would share by chance."""
    return k / (2 * n - k) if n and 0 < k <= n else 0.0


# ------------------------------------------------------------------------------------------------ compute

def row_features(pool: pd.DataFrame) -> pd.DataFrame:
    """Per pool row (indexed by uid): source, skill, text-only, image hash, characters and words."""
    image = pool["image"]
    has_image = image.notna()
    top = image.where(has_image, "").astype(str).str.split("/", n=1)
    source = [p[0] if len(p) > 1 else "(root)" for p in top]
    source = pd.Series(source, index=pool.index).where(has_image, TEXT_ONLY)
    if "skill" in pool and pool["skill"].notna().any():
        skill = pool["skill"].where(pool["skill"].notna(), NO_SKILL).astype(str)
    else:
        skill = None
    text = [" ".join(t for _, t in json.loads(turns)).replace("<image>", "") for turns in pool["turns"]]
    sha = pool["image_sha256"] if "image_sha256" in pool else image
    out = pd.DataFrame({"source": source.to_numpy(), "text_only": (~has_image).to_numpy(),
                        "sha": sha.where(has_image, None).to_numpy(),
                        "chars": np.array([len(t) for t in text], dtype=np.int64),
                        "words": np.array([len(t.split()) for t in text], dtype=np.int64)},
                       index=pool["uid"].to_numpy())
    if skill is not None:
        out["skill"] = skill.to_numpy()
    return out


def profile(rows: pd.DataFrame, facets: Mapping[str, Sequence[str]]) -> Profile:
    """The composition of ``rows`` (a slice of ``row_features``)."""
    n = len(rows)
    shares = {}
    for facet, cats in facets.items():
        counts = rows[facet].value_counts()
        shown = {c: float(counts.get(c, 0)) / n if n else 0.0 for c in cats if c != OTHER}
        if OTHER in cats:
            shown[OTHER] = max(1.0 - sum(shown.values()), 0.0) if n else 0.0
        shares[facet] = shown
    sha = rows["sha"].dropna()
    repeated = int(sha.duplicated(keep=False).sum())
    return Profile(n, shares, float(rows["text_only"].mean()) if n else 0.0, repeated / n if n else 0.0,
                   _quartiles(rows["chars"]), _quartiles(rows["words"]))


def _quartiles(x: pd.Series) -> tuple[float, float, float]:
    if not len(x):
        return (math.nan, math.nan, math.nan)
    q = np.percentile(x.to_numpy(dtype=np.float64), [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def facets_of(features: pd.DataFrame) -> dict[str, list[str]]:
    """The facets worth showing (more than one category in the pool; for sources, more than one image folder),
    categories by pool share; beyond ``MAX_CATEGORIES`` the smallest fold into ``other``."""
    out = {}
    for facet in ("source", "skill"):
        if facet not in features:
            continue
        counts = features[facet].value_counts()
        if len(counts.drop(TEXT_ONLY, errors="ignore")) < 2:  # one image folder: its mix is the text-only share
            continue
        cats = sorted(counts.index, key=lambda c: (-counts[c], str(c)))
        out[facet] = [str(c) for c in cats] if len(cats) <= MAX_CATEGORIES else [
            *map(str, cats[:MAX_CATEGORIES - 1]), OTHER]
    return out


def cell_cards(pool: pd.DataFrame, selections: Mapping[CellKey, Sequence[str]],
               missing: Mapping[CellKey, str] | None = None) -> Cards:
    """Cards for every cell of ``selections`` (its selected uids) against ``pool`` (a manifest frame: uid, image,
    image_sha256, turns, skill). Raises ValueError when a selection names a uid the pool does not have."""
    features = row_features(pool)
    facets = facets_of(features)
    sets = {k: set(v) for k, v in selections.items()}
    cells = []
    for key, uids in selections.items():
        unknown = [u for u in uids if u not in features.index]
        if unknown:
            raise ValueError(f"{key[0]} @ {key[1]} seed {key[2]}: {len(unknown)} selected uid(s) are not in the "
                             f"pool (first {unknown[0]!r})")
        jac = {}
        for other, theirs in sets.items():
            if other != key and other[1:] == key[1:]:
                union = len(sets[key] | theirs)
                jac[other[0]] = len(sets[key] & theirs) / union if union else 0.0
        cells.append(CellCard(*key, profile(features.loc[list(uids)], facets), jac))
    return Cards(profile(features, facets), cells, facets, len(pool), dict(missing or {}))


# ------------------------------------------------------------------------------------------ from a store

def store_root(run_dir: Path, spec: Mapping) -> Path:
    """The artifact store a run folder belongs to: the spec's ``store`` (absolute once resolved), else the folder
    above ``runs/`` (run folders live at ``STORE/runs/NAME``)."""
    store = spec.get("store")
    if store and (Path(str(store)) / "jobs").is_dir():
        return Path(str(store))
    return Path(run_dir).resolve().parent.parent


def load_cards(run_dir: Path, spec: Mapping, board: pd.DataFrame) -> tuple[Cards | None, str | None]:
    """The run's cards from its store: the pool manifest of its prepare job and each cell's ``selection.txt``.
    Returns (cards, None) or (None, why there are none). The oracle and anti-oracle subsets get cards like any
    selector; the full-data reference and the untuned target select nothing, so they have none."""
    if board.empty or "select_job" not in board:
        return None, "the run's leaderboard has no select jobs"
    jobs = store_root(run_dir, spec) / "jobs"
    prepared = sorted({p for p in board.get("prepare_job", pd.Series(dtype=object)).dropna()})
    if len(prepared) != 1:
        return None, ("the run records no prepare job" if not prepared
                      else f"the run has {len(prepared)} prepare jobs (one pool expected)")
    manifest = jobs / prepared[0] / MANIFEST
    if not manifest.exists():
        return None, f"the pool manifest is not in the store ({manifest})"
    import pyarrow.parquet as pq

    names = pq.read_schema(manifest).names
    pool = pq.read_table(manifest, columns=[c for c in ("uid", "image", "image_sha256", "turns", "skill")
                                            if c in names]).to_pandas()
    selections: dict[CellKey, list[str]] = {}
    missing: dict[CellKey, str] = {}
    for _, r in board[~board["selector"].isin([REFERENCE, UNTUNED])].iterrows():
        key = (str(r["selector"]), str(r["budget"]), int(r["seed"]))
        jid = r.get("select_job")
        path = jobs / str(jid) / SELECTION if isinstance(jid, str) and jid else None
        if path is not None and path.exists():
            selections[key] = path.read_text().splitlines()
        else:
            why = r.get("reason")
            missing[key] = f"no selection ({r['status']}" + (f": {why})" if isinstance(why, str) and why else ")")
    return cell_cards(pool, selections, missing), None


# ------------------------------------------------------------------------------------------------ records

def _profile_json(p: Profile) -> dict:
    return {"n": p.n, "shares": p.shares, "text_only": p.text_only, "repeated_image": p.repeated_image,
            "chars_quartiles": list(p.chars), "words_quartiles": list(p.words)}


def _record(selector: str, budget: str, seed: int | None, p: Profile, facets: Mapping[str, Sequence[str]],
            jaccard: Mapping[str, float], others: Sequence[str]) -> dict:
    row: dict = {"selector": selector, "budget": budget, "seed": seed, "n": p.n, "text_only": p.text_only,
                 "repeated_image": p.repeated_image}
    for name, q in (("chars", p.chars), ("words", p.words)):
        row.update({f"{name}_q1": q[0], f"{name}_median": q[1], f"{name}_q3": q[2]})
    for facet, cats in facets.items():
        row.update({f"{facet}: {c}": p.shares[facet].get(c, 0.0) for c in cats})
    row.update({f"jaccard: {o}": jaccard.get(o) for o in others})
    return row

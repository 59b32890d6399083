"""Instruction tuning on the whole embedded pool with the demo's recipe must beat the untuned (stage-1 only) target
on every benchmark but emb_pope — by margins that chance cannot produce (several binomial standard errors on 200
items).

emb_pope is left out because no recipe that fits a test learns it on every machine and seed (docs/embedded-pope.md):
6 epochs of this pool lifted its accuracy from 0.56 to 0.94 on one machine and to 0.585 on another; its yes/no rows
alone, 2 epochs at batch 2, to 0.79 at seed 0 and 0.54 at seed 1."""

from __future__ import annotations

import math

import pytest

from selbench.embedded import build_world
from selbench.evaluators.embedded import evaluate_hf
from selbench.models import tiny
from selbench.models.data import Collator
from selbench.models.training import TrainConfig, train
from selbench.pool.manifest import manifest_from_pool
from selbench.pool.world import BENCHMARKS
from selbench.pool.manifest import examples

RECIPE = TrainConfig(method="full", lr=5e-4, projector_lr=None, epochs=2, batch_size=8, warmup_ratio=0.03)  # the demo's
LEARNED = [b.name for b in BENCHMARKS if b.name != "emb_pope"]  # each by its exact match


@pytest.mark.slow
def test_finetune_on_full_pool_beats_untuned(tmp_path_factory) -> None:
    from tests.conftest import CACHE

    world = build_world(CACHE / "world-seed0", seed=0, log=lambda m: None)
    before, after = {}, {}
    model, processor = tiny.load(world / "models" / "target")
    for b in LEARNED:
        rows = evaluate_hf(model, processor, b, world / "benchmarks")["rows"]
        before[b] = rows[0]["value"]
    pool, _ = manifest_from_pool(world / "pool" / "pool.json")
    model, _ = train(model, Collator(processor, model.config.image_seq_length), examples(pool), RECIPE)
    for b in LEARNED:
        rows = evaluate_hf(model, processor, b, world / "benchmarks")["rows"]
        after[b] = rows[0]["value"]
        n = rows[0]["n"]
        # the gain must exceed 4 standard errors of a proportion at the tuned score (p ≥ 0.1 floor)
        p = max(after[b], 0.1)
        margin = 4 * math.sqrt(p * (1 - p) / n)
        assert after[b] - before[b] > margin, (b, before[b], after[b], margin)

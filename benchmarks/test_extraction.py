"""Feature extraction on the tiny target: truncated (first block only) vs the full forward with logits."""

from __future__ import annotations

import pytest

from selbench.models import tiny
from selbench.models.extract import FeatureEngine
from selbench.pool.manifest import examples


@pytest.fixture(scope="module")
def engine_and_batch(small_world, small_pool):
    model, processor = tiny.load(small_world / "models" / "target", attn="sdpa")
    eng = FeatureEngine(model, processor, model.config.image_seq_length, device="cpu", batch_size=64)
    rows = [int(i) for i in small_pool.has_image.to_numpy().nonzero()[0][:64]]
    return eng, eng.collator(examples(small_pool, rows))


@pytest.mark.parametrize("mode", ["first_block", "first_block_with_attention", "full_forward_logits"])
def test_extraction_batch64(benchmark, engine_and_batch, mode):
    eng, batch = engine_and_batch
    if mode == "first_block":
        benchmark(eng.forward, batch, n_blocks=1, blocks=[0])
    elif mode == "first_block_with_attention":
        benchmark(eng.forward, batch, n_blocks=1, blocks=[0], attention={0: lambda p, b: p.mean(1)})
    else:
        benchmark(eng.forward, batch, n_blocks=None, logits=True)

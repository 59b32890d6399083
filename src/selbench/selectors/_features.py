"""Model loading for the extraction-based selectors (pool → examples is ``selbench.pool.manifest.examples``)."""

from __future__ import annotations

from pathlib import Path

import torch

from selbench.models.extract import FeatureEngine, Sharding
from selbench.selectors.base import ScoringContext


def engine(model_dir: Path, ctx: ScoringContext) -> FeatureEngine:
    """Load a VLM with memory-efficient attention (attention we need is recomputed per layer), on ``ctx.device``,
    extracting this rank's share of every ``run`` (``ctx.rank`` of ``ctx.world``)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dev = ctx.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    processor = AutoProcessor.from_pretrained(model_dir)
    n_img = int(model.config.image_seq_length)
    return FeatureEngine(model, processor, n_img, device=dev, dtype=dtype, batch_size=ctx.batch_size,
                         sharding=Sharding(ctx.rank, ctx.world, ctx.shard_size, ctx.dead_peer))

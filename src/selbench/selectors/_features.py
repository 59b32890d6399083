"""Small shared pieces for model-based selectors: pool → examples, model loading for extraction."""

from __future__ import annotations

from pathlib import Path

import torch

from selbench.models.data import Example
from selbench.models.extract import FeatureEngine
from selbench.pool.manifest import Manifest


def examples(pool: Manifest, indices=None) -> list[Example]:
    idx = range(len(pool)) if indices is None else indices
    return [Example(pool.turns(i), pool.image_path(i)) for i in idx]


def engine(model_dir: Path, device: str | None, batch_size: int) -> FeatureEngine:
    """Load a VLM with memory-efficient attention (attention we need is recomputed per layer)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    processor = AutoProcessor.from_pretrained(model_dir)
    n_img = int(model.config.image_seq_length)
    return FeatureEngine(model, processor, n_img, device=dev, dtype=dtype, batch_size=batch_size)

"""Batches of tokenised conversations with images, shared by fine-tuning and feature extraction."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selbench.models.chat import Encoded, encode
from selbench.pool.manifest import Example  # the pool layer's unit of data; re-exported here

__all__ = ["Batch", "Collator", "Example"]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], -100 outside assistant tokens
    roles: torch.Tensor  # [B, T] int8 TEMPLATE/IMAGE/INSTRUCTION/ANSWER, -1 on padding
    pixel_values: torch.Tensor | None  # [n_images, 3, H, W] for the rows that have an image, in row order
    has_image: torch.Tensor  # [B] bool

    def model_inputs(self) -> dict:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
        return out

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        pv = self.pixel_values
        if pv is not None:
            pv = pv.to(device=device, dtype=dtype or pv.dtype)
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                     self.roles.to(device), pv, self.has_image.to(device))


def open_image(image: Path | bytes) -> Image.Image:
    if isinstance(image, bytes):
        return Image.open(io.BytesIO(image)).convert("RGB")
    with Image.open(image) as im:
        return im.convert("RGB")


class Collator:
    """Tokenises with the shared chat template and pads (right for training, left for generation)."""

    def __init__(self, processor, n_image_tokens: int, *, max_length: int | None = None,
                 padding_side: str = "right"):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.n_image_tokens = n_image_tokens
        self.max_length = max_length
        self.padding_side = padding_side
        self._pixel_cache: dict[Path, torch.Tensor] = {}

    def pixels(self, image: Path | bytes) -> torch.Tensor:
        if isinstance(image, Path) and image in self._pixel_cache:
            return self._pixel_cache[image]
        pv = self.processor.image_processor(images=open_image(image), return_tensors="pt")["pixel_values"][0]
        if isinstance(image, Path):
            self._pixel_cache[image] = pv
        return pv

    def encode(self, ex: Example, *, generation_prompt: bool = False) -> Encoded:
        return encode(self.tokenizer, ex.turns, ex.image is not None, self.n_image_tokens,
                      max_length=self.max_length, generation_prompt=generation_prompt)

    def __call__(self, examples: Sequence[Example], *, generation_prompt: bool = False) -> Batch:
        encs = [self.encode(ex, generation_prompt=generation_prompt) for ex in examples]
        T = max(len(e.input_ids) for e in encs)
        B = len(encs)
        ids = np.full((B, T), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((B, T), dtype=np.int64)
        labels = np.full((B, T), -100, dtype=np.int64)
        roles = np.full((B, T), -1, dtype=np.int8)
        for b, e in enumerate(encs):
            n = len(e.input_ids)
            sl = slice(0, n) if self.padding_side == "right" else slice(T - n, T)
            ids[b, sl], mask[b, sl], labels[b, sl], roles[b, sl] = e.input_ids, 1, e.labels, e.roles
        imgs = [self.pixels(ex.image) for ex in examples if ex.image is not None]
        return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels),
                     torch.from_numpy(roles), torch.stack(imgs) if imgs else None,
                     torch.tensor([ex.image is not None for ex in examples]))

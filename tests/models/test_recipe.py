"""The 7B-facing parts of the recipe on the tiny target: gradient checkpointing (on by size, or forced) trains to
the same weights as without it, and the exported checkpoint's dtype follows the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selbench.models import tiny
from selbench.models import training as tr
from selbench.models.data import Collator
from selbench.models.training import TrainConfig, checkpointing, export_dtype, merge_for_export, train
from selbench.pool.manifest import examples

LORA = TrainConfig(method="lora", lr=1e-3, projector_lr=1e-4, epochs=1, batch_size=8, lora_r=8, lora_alpha=16,
                   lora_dropout=0.0, seed=0)


def test_checkpointing_is_on_by_size_unless_the_recipe_says(small_world: Path, monkeypatch) -> None:
    model, _ = tiny.load(small_world / "models" / "target")
    assert not checkpointing(model, LORA)  # a tiny model: off by default
    assert checkpointing(model, LORA.model_copy(update={"gradient_checkpointing": True}))
    monkeypatch.setattr(tr, "CHECKPOINTING_FROM", sum(p.numel() for p in model.parameters()))
    assert checkpointing(model, LORA)  # as large as the threshold: on
    assert not checkpointing(model, LORA.model_copy(update={"gradient_checkpointing": False}))


def test_checkpointing_trains_to_the_same_weights(small_world: Path, small_pool) -> None:
    recipe = LORA  # LoRA: the gradients must reach the adapters through recomputed layers of a frozen model
    rows = examples(small_pool, list(range(16)))
    runs = []
    for on in (False, True):
        model, processor = tiny.load(small_world / "models" / "target")
        trained, result = train(model, Collator(processor, model.config.image_seq_length), rows,
                                recipe.model_copy(update={"gradient_checkpointing": on}))
        base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
        assert getattr(base, "is_activation_checkpointing", None) is on
        runs.append((merge_for_export(trained).state_dict(), result.losses))
    (w0, l0), (w1, l1) = runs
    assert l1 == pytest.approx(l0, rel=1e-5)
    assert max(float((w0[k] - w1[k]).abs().max()) for k in w0) < 1e-5


def test_export_dtype_follows_the_recipe() -> None:
    assert export_dtype(LORA) == torch.float32
    assert export_dtype(LORA.model_copy(update={"bf16": True})) == torch.bfloat16
    assert export_dtype(LORA.model_copy(update={"bf16": True, "save_dtype": "float32"})) == torch.float32
    with pytest.raises(ValueError, match="save_dtype"):
        TrainConfig(save_dtype="int8")

"""Fine-tune the target on a subset (or the full pool: the 100 % reference) with the protocol's recipe.

Exports a checkpoint plain HF and vLLM can load: LoRA merged into the base.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from selbench.harness.stages.select import SELECTION
from selbench.harness.store import Job, Store
from selbench.models.data import Collator
from selbench.models.training import TrainConfig, merge_for_export, train
from selbench.pool.manifest import load_manifest
from selbench.progress import progress_bar
from selbench.selectors._features import examples


def run(job: Job, store: Store, out: Path) -> dict:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    c = job.config
    recipe = TrainConfig(**c["recipe"])
    pool = load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    indices = json.loads((store.path(job.deps["select"]) / f"{SELECTION}.json").read_text())["indices"]
    model = LlavaForConditionalGeneration.from_pretrained(c["target"], dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(c["target"])
    collator = Collator(processor, int(model.config.image_seq_length), max_length=recipe.max_length)
    with progress_bar(f"fine-tune on {len(indices)} samples") as advance:
        model, result = train(model, collator, examples(pool, indices), recipe,
                              on_step=lambda s, total, loss: advance(1, total=total, info=f"loss {loss:.3f}"))
    model = merge_for_export(model)
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    (out / "train_log.json").write_text(json.dumps({"losses": result.losses, "steps": result.steps}))
    return {"parts": {"training": result.wall_s}, "samples": result.samples, "steps": result.steps,
            "final_loss": result.losses[-1] if result.losses else None}

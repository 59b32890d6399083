"""Fine-tune the target on a subset (or the full pool: the 100 % reference) with the protocol's recipe.

Exports a checkpoint plain HF and vLLM can load: LoRA merged into the base. With ``processes`` > 1 in the job
(``executor.finetune_processes``: one per GPU the job gets) or a DeepSpeed recipe, training runs as that many
processes under ``accelerate launch`` (selbench.models.launch); otherwise in this process. The selection is
re-validated here (``checked_selection``: exact budget, unique, in the pool, uids matching) before training.
"""

from __future__ import annotations

import json
from pathlib import Path

from selbench.harness.contracts import FinetuneConfig
from selbench.harness.stages.select import checked_selection
from selbench.harness.store import Job, Store
from selbench.models.launch import STATE, load_trained, train_distributed
from selbench.models.training import export_dtype, merge_for_export, train_on_pool
from selbench.pool.manifest import load_manifest
from selbench.progress import progress_bar


def run(job: Job, store: Store, out: Path) -> dict:
    from transformers import AutoProcessor

    c = FinetuneConfig.parse(job)
    recipe, processes = c.recipe, c.processes
    manifest = store.path(job.deps["pool"]) / "manifest.parquet"
    # the harness's check of the selection, not the selector's: before any training
    indices = checked_selection(store, store.read_job(job.deps["select"]), load_manifest(manifest))
    with progress_bar(f"fine-tune on {len(indices)} samples") as advance:
        on_step = lambda s, total, loss: advance(1, total=total, info=f"loss {loss:.3f}")  # noqa: E731
        if processes > 1 or recipe.deepspeed != "none":
            work = out / "launch"
            launched = train_distributed(c.target, manifest, indices, recipe, processes, work, on_step=on_step,
                                         log=lambda line: print(line, flush=True))
            model = load_trained(c.target, recipe, work / STATE)
            (work / STATE).unlink()  # the exported checkpoint below is the artifact
            processor = AutoProcessor.from_pretrained(c.target)
            result = launched.result
            peaks = {"peak_gpu_mb": launched.peak_gpu_mb} if launched.peak_gpu_mb is not None else {}
        else:
            peaks = {}
            model, processor, result = train_on_pool(c.target, manifest, indices, recipe, on_step=on_step)
    model = merge_for_export(model).to(export_dtype(recipe))  # bf16 for a bf16 recipe: what vLLM then serves
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    (out / "train_log.json").write_text(json.dumps({"losses": result.losses, "steps": result.steps,
                                                    "processes": processes, "deepspeed": recipe.deepspeed}))
    return {"parts": {"training": result.wall_s}, "samples": result.samples, "steps": result.steps,
            "processes": processes, "final_loss": result.losses[-1] if result.losses else None, **peaks}

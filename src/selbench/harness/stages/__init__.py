"""One function per stage: ``run(job, store, out_dir) -> meta`` (timings and anything else for meta.json)."""

STAGES = {
    "prepare": "selbench.harness.stages.prepare:run",
    "score": "selbench.harness.stages.score:run",
    "select": "selbench.harness.stages.select:run",
    "finetune": "selbench.harness.stages.finetune:run",
    "evaluate": "selbench.harness.stages.evaluate:run",
}

"""One rank of a multi-process fine-tune (started by ``selbench.models.launch`` through ``accelerate launch``).

Usage: python -m selbench.models.train_worker ARGS.json — target, pool manifest, selected indices, recipe, work dir.
Rank 0 prints one ``selbench-train-step STEP TOTAL LOSS`` line per optimiser step (the job's progress bar) and
writes the gathered state dict and the result JSON (``LaunchResult``) into the work dir.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _say(line: str) -> None:
    """One line in one write: the ranks share the launcher's pipe, and under PYTHONUNBUFFERED ``print`` writes the
    text and its newline separately, so two ranks' lines could interleave. A write under PIPE_BUF is atomic."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(args_file: str) -> None:
    import torch

    from selbench.models.launch import RESULT, STATE, STEP_PREFIX, LaunchResult
    from selbench.models.training import TrainConfig, dist_info, train_on_pool

    args = json.loads(Path(args_file).read_text())
    cfg = TrainConfig(**args["recipe"])
    work = Path(args["work"])

    def on_step(step: int, total: int, loss: float) -> None:
        if dist_info()[0] == 0:
            _say(f"{STEP_PREFIX}{step} {total} {loss:.6f}")

    _, _, result = train_on_pool(args["target"], Path(args["manifest"]), args["indices"], cfg, on_step=on_step,
                                 state_out=work / STATE)
    rank, world = dist_info()
    _say(f"selbench-train-rank {rank}/{world} trained on {result.local_samples} of {result.samples} samples")
    peak_gpu = None
    if torch.cuda.is_available():  # the largest rank's peak: the job reports it as the stage's GPU memory
        t = torch.tensor([torch.cuda.max_memory_allocated() / 2**20], device="cuda")
        if world > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        peak_gpu = float(t.item())
    if rank == 0:
        (work / RESULT).write_text(json.dumps(LaunchResult(result, world, peak_gpu).to_json()))


if __name__ == "__main__":
    main(sys.argv[1])

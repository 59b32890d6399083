"""Multi-process fine-tuning inside one fine-tune job: ``accelerate launch`` of ``selbench.models.train_worker``.

N processes (one per GPU the job was given; gloo processes on CPU, for tests) train with DDP, or with DeepSpeed
ZeRO-2/3 when the recipe says so (LLaVA-1.5's and ScalSelect's scripts use ZeRO-3). Rank 0 writes the gathered
state dict; this (single) process loads it into a fresh copy of the target, merges LoRA and saves the checkpoint,
so the export is the same code as the in-process path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selbench.models.training import TrainConfig, TrainResult, prepare_model

STEP_PREFIX = "selbench-train-step "
RESULT = "train_result.json"
STATE = "trained_state.pt"


class TrainingError(RuntimeError):
    pass


@dataclass
class LaunchResult:
    """What rank 0 of a multi-process fine-tune reports (``work / RESULT``)."""

    result: TrainResult
    processes: int
    peak_gpu_mb: float | None  # the largest rank's peak; None without GPUs

    def to_json(self) -> dict:
        return {"result": self.result.to_json(), "processes": self.processes, "peak_gpu_mb": self.peak_gpu_mb}

    @classmethod
    def from_json(cls, data: dict) -> "LaunchResult":
        return cls(TrainResult.from_json(data["result"]), int(data["processes"]), data["peak_gpu_mb"])


def deepspeed_config(cfg: TrainConfig, processes: int) -> dict:
    """DeepSpeed's JSON for the recipe: per-device micro-batch = global micro-batch / processes."""
    if cfg.deepspeed == "none":
        raise ValueError("recipe has deepspeed: none")
    zero: dict = {"stage": 3 if cfg.deepspeed == "zero3" else 2, "overlap_comm": False,
                  "contiguous_gradients": True}
    if cfg.deepspeed == "zero3":
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size // processes,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.bf16},
        "zero_allow_untested_optimizer": True,  # torch AdamW with per-group learning rates (projector lr)
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(cfg: TrainConfig, processes: int, args_file: Path, *, port: int,
                   deepspeed_file: Path | None = None) -> list[str]:
    """The ``accelerate launch`` command line (one machine; ``processes`` ranks)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
           "--num_processes", str(processes), "--main_process_port", str(port), "--dynamo_backend", "no"]
    if cfg.deepspeed != "none":
        if deepspeed_file is None:
            raise ValueError("a DeepSpeed recipe needs its config file")
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_file)]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "bf16" if cfg.bf16 else "no"]
    return cmd + ["--module", "selbench.models.train_worker", str(args_file)]


def check_processes(cfg: TrainConfig, processes: int) -> None:
    if processes < 1:
        raise ValueError(f"executor.finetune_processes must be ≥ 1, got {processes}")
    if cfg.batch_size % processes:
        raise ValueError(f"finetune.batch_size {cfg.batch_size} is the global micro-batch; it must be a multiple of "
                         f"executor.finetune_processes ({processes})")


def train_distributed(target: str | Path, manifest: Path, indices: list[int], cfg: TrainConfig, processes: int,
                      work: Path, *, on_step: Callable[[int, int, float], None] | None = None,
                      log: Callable[[str], None] = lambda line: None) -> LaunchResult:
    """Run the worker under ``accelerate launch``; returns rank 0's result and leaves the full state dict in
    ``work / STATE``. Raises TrainingError with the log's tail on failure."""
    import torch

    check_processes(cfg, processes)
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / RESULT, work / STATE):
        stale.unlink(missing_ok=True)
    ds_file = None
    if cfg.deepspeed != "none":
        ds_file = work / "deepspeed.json"
        ds_file.write_text(json.dumps(deepspeed_config(cfg, processes), indent=1))
    args_file = work / "train_args.json"
    args_file.write_text(json.dumps({"target": str(target), "manifest": str(manifest), "indices": indices,
                                     "recipe": cfg.model_dump(mode="json"), "work": str(work)}))
    env = dict(os.environ)
    if cfg.deepspeed != "none" and not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator (gloo); GPUs are detected by themselves
    cmd = launch_command(cfg, processes, args_file, port=free_port(), deepspeed_file=ds_file)
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        log(line)
        tail.append(line)
        if line.startswith(STEP_PREFIX) and on_step:
            step, total, loss = line[len(STEP_PREFIX):].split()
            on_step(int(step), int(total), float(loss))
    rc = proc.wait()
    if rc != 0 or not (work / RESULT).exists() or not (work / STATE).exists():
        raise TrainingError(f"{processes}-process fine-tune ({' '.join(cmd[2:4])}) failed with exit {rc}:\n"
                            + "\n".join(tail))
    return LaunchResult.from_json(json.loads((work / RESULT).read_text()))


def load_trained(target: str | Path, cfg: TrainConfig, state_file: Path):
    """A fresh copy of the target, prepared as the workers prepared it (LoRA wrapped), with the trained weights."""
    import torch
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(target, dtype=torch.float32)
    model, _ = prepare_model(model, cfg)
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TrainingError(f"trained state does not match the target: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
    model.eval()
    return model

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

from selbench.models.extract import RankError
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


# ---------------------------------------------------------------- ranks of a multi-process score job
# Feature extraction needs no collective communication: the ranks are plain subprocesses that exchange their
# shards as files (selbench.models.extract.FeatureEngine.run), so a rank that dies is noticed by whoever waits on
# its files (``RankProcesses.dead_peer`` in rank 0, ``parent_watch`` in the others).


class RankProcesses:
    """Ranks 1..world−1 of a multi-process job, started by rank 0 (this process) as ``argv + [rank]``.

    Each logs to ``logs / rank-R.log``, without progress bars, in this process's process group (an executor that
    kills the job's group takes them along). As a context manager: on leaving normally, every rank is waited for
    and one that failed raises RankError with its log's tail; on an exception they are killed."""

    def __init__(self, argv: list[str], world: int, logs: Path):
        self.world, self.logs = world, logs
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SELBENCH_NO_PROGRESS": "1"}
        self.procs: dict[int, subprocess.Popen] = {}
        for rank in range(1, world):
            with open(self.log(rank), "wb") as log:
                self.procs[rank] = subprocess.Popen([*argv, str(rank)], stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, env=env)

    def log(self, rank: int) -> Path:
        return self.logs / f"rank-{rank}.log"

    def _describe(self, rank: int, rc: int) -> str:
        tail = self.log(rank).read_text(errors="replace").splitlines()[-15:]
        return (f"rank {rank} of {self.world} (pid {self.procs[rank].pid}) exited with code {rc}; "
                f"{self.log(rank)} ends:\n" + "\n".join(tail))

    def dead_peer(self) -> str | None:
        """The first rank that has exited (while rank 0 still waits on its files), None while all run."""
        for rank, proc in self.procs.items():
            rc = proc.poll()
            if rc is not None:
                return self._describe(rank, rc)
        return None

    def join(self) -> None:
        failed = [self._describe(rank, rc) for rank, proc in self.procs.items() if (rc := proc.wait()) != 0]
        if failed:
            raise RankError("\n".join(failed))

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def __enter__(self) -> "RankProcesses":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.join()
        else:
            self.kill()


def parent_watch() -> Callable[[], str | None]:
    """For ranks 1..: names rank 0 once it has gone (this process was re-parented), None while it runs."""
    parent = os.getppid()

    def dead() -> str | None:
        return None if os.getppid() == parent else f"rank 0 (pid {parent}) exited"

    return dead


def rank_device(device: str | None, rank: int, world: int) -> str | None:
    """The device of ``rank`` in a ``world``-process job that was given ``device`` (the spec's: None, "cpu",
    "cuda"). One process: as given. Several on GPUs: rank r uses cuda:r of the devices the job can see (the
    executor's CUDA_VISIBLE_DEVICES), which must be at least ``world``; on CPU all ranks use the CPU."""
    if world == 1:
        return device
    import torch

    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return "cpu"
    if device not in (None, "cuda"):
        raise ValueError(f"device {device!r} names one device; with {world} score workers give `device: cuda` "
                         "(or none): rank r uses cuda:r")
    seen = torch.cuda.device_count()
    if seen < world:
        raise ValueError(f"{world} score workers need {world} GPUs; this job sees {seen} "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    return f"cuda:{rank}"

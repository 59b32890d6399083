"""Supervised fine-tuning loop for LLaVA-architecture models: loss on assistant tokens only, LoRA (peft) or
full fine-tuning, separate projector learning rate, cosine schedule with linear warm-up (LLaVA-1.5 recipe).
Runs under ``accelerate``: in process for one device, or as N processes started by ``selbench.models.launch``
(``accelerate launch``: DDP, or DeepSpeed ZeRO-2/3). ``batch_size`` is the *global* micro-batch: each of the N
processes takes every N-th sample of it, so a recipe means the same optimisation whatever the process count
(LLaVA-1.5: 128 = 16 per device × 8 GPUs).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from selbench.models.data import Collator, Example
from selbench.pool.manifest import examples, load_manifest

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class TrainConfig(BaseModel):
    """Defaults are LLaVA-1.5's LoRA recipe (finetune_lora.sh)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["lora", "full"] = "lora"
    lr: float = Field(default=2e-4, gt=0)
    projector_lr: float | None = 2e-5  # None: same as lr
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=16, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    warmup_ratio: float = Field(default=0.03, ge=0, le=1)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    freeze_vision: bool = True
    max_length: int = Field(default=2048, ge=1)
    bf16: bool = False
    deepspeed: Literal["none", "zero2", "zero3"] = "none"  # LLaVA-1.5 / ScalSelect train with ZeRO-3
    # recompute each layer's activations in the backward pass (LLaVA's scripts: --gradient_checkpointing True);
    # None: on for targets of a billion parameters or more (the 7B step needs it: docs/performance.md), off below
    gradient_checkpointing: bool | None = None
    # dtype of the exported checkpoint (what evaluation serves): auto = bfloat16 when training in bf16, else float32
    save_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    samples: int
    wall_s: float
    losses: list[float] = field(default_factory=list)
    local_samples: int = 0  # samples this process trained on (= samples with one process)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TrainResult":
        return cls(**data)  # a missing or unknown field is an error, never a silent default


CHECKPOINTING_FROM = 1_000_000_000  # parameters: ``gradient_checkpointing: null`` turns it on from here


def checkpointing(model, cfg: TrainConfig) -> bool:
    """Whether this recipe recomputes activations for this model (explicit, or by the model's size)."""
    if cfg.gradient_checkpointing is not None:
        return cfg.gradient_checkpointing
    return sum(p.numel() for p in model.parameters()) >= CHECKPOINTING_FROM


def export_dtype(cfg: TrainConfig) -> torch.dtype:
    """The exported checkpoint's dtype: ``save_dtype``, or bfloat16 for a bf16 recipe and float32 otherwise (a
    float32 checkpoint of a 7B model is twice the disk and would be served in float32)."""
    name = cfg.save_dtype if cfg.save_dtype != "auto" else ("bfloat16" if cfg.bf16 else "float32")
    return getattr(torch, name)


def prepare_model(model, cfg: TrainConfig):
    """Freeze/unfreeze per recipe; gradient checkpointing; wrap with LoRA. Returns (model, param groups)."""
    if checkpointing(model, cfg):
        # non-reentrant: gradients reach LoRA's adapters although the frozen embeddings' outputs need none
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for p in model.parameters():
        p.requires_grad = False
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=LORA_TARGETS, modules_to_save=None, bias="none")
        model = get_peft_model(model, lora)
    else:
        for n, p in model.named_parameters():
            if "language_model" in n or "lm_head" in n:
                p.requires_grad = True
    if not cfg.freeze_vision:
        for n, p in model.named_parameters():
            if "vision_tower" in n:
                p.requires_grad = True
    projector, rest = [], []
    for n, p in model.named_parameters():
        if "multi_modal_projector" in n and "lora_" not in n:
            p.requires_grad = True
            projector.append(p)
        elif p.requires_grad:
            rest.append(p)
    groups = [{"params": rest, "lr": cfg.lr},
              {"params": projector, "lr": cfg.projector_lr if cfg.projector_lr is not None else cfg.lr}]
    return model, [g for g in groups if g["params"]]


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def total_steps(n_examples: int, cfg: TrainConfig) -> tuple[int, int]:
    """(micro-batches, optimiser steps) for ``n_examples`` under ``cfg``."""
    micro = max(1, round(math.ceil(n_examples / cfg.batch_size) * cfg.epochs))
    return micro, math.ceil(micro / cfg.grad_accum)


def dist_info() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) without it. Read from torch, not from accelerate: under
    DeepSpeed on CPU accelerate 1.15's state reports one process although DeepSpeed runs several."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_over_ranks(value: float) -> float:
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def train(
    model,
    collator: Collator,
    examples: Sequence[Example],
    cfg: TrainConfig,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
    checkpoint_at: Sequence[int] = (),
    on_checkpoint: Callable[[int, object], None] | None = None,
    state_out: Path | None = None,
):
    """Train in place; returns (model, TrainResult). ``checkpoint_at``: optimiser steps after which
    ``on_checkpoint(step, model)`` is called (XMAS's trajectory checkpoints). ``state_out``: every process
    takes part in gathering the full (unpartitioned, under ZeRO-3) state dict, which rank 0 saves there.
    Under several processes each takes its share of every global micro-batch; ``TrainResult.samples`` counts
    the whole global batch and losses are averaged over processes."""
    from accelerate import Accelerator

    torch.manual_seed(cfg.seed)
    model, groups = prepare_model(model, cfg)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                      mixed_precision="bf16" if cfg.bf16 else "no",
                      cpu=not torch.cuda.is_available() and not deepspeed)
    rank, world = dist_info()
    n = len(examples)
    if n == 0:
        raise ValueError("cannot fine-tune on an empty subset")
    micro_total, total = total_steps(n, cfg)
    warmup = round(cfg.warmup_ratio * total)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total, warmup))
    # The scheduler is stepped here once per optimiser step, not prepared: accelerate's wrapper steps it once per
    # *process* (it assumes each process consumes its own batches), which would run the schedule N× too fast.
    model, opt = acc.prepare(model, opt)
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    while len(order) < micro_total * cfg.batch_size:
        order += torch.randperm(n, generator=gen).tolist()
    t0 = time.perf_counter()
    result = TrainResult(0, 0, 0.0)
    checkpoints = set(checkpoint_at)
    for micro in range(micro_total):
        idx = order[micro * cfg.batch_size:(micro + 1) * cfg.batch_size]
        mine = idx[rank::world]  # this process's share of the global micro-batch
        batch = collator([examples[i] for i in mine]).to(acc.device)
        # Token-mean over the *global* micro-batch (as transformers' Trainer does with num_items_in_batch): each
        # process divides its summed loss by the global assistant-token count / processes, so the gradients the
        # processes average equal one process's on the whole batch.
        n_tokens = max(_sum_over_ranks(float((batch.labels[:, 1:] != -100).sum())), 1.0)
        with acc.accumulate(model):
            out = model(**batch.model_inputs(), labels=batch.labels,
                        num_items_in_batch=torch.tensor(n_tokens / world, device=acc.device))
            acc.backward(out.loss)
            if acc.sync_gradients and cfg.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            if acc.sync_gradients:
                sched.step()
            opt.zero_grad()
        result.samples += len(idx)
        result.local_samples += len(mine)
        if acc.sync_gradients:
            result.steps += 1
            loss = _sum_over_ranks(float(out.loss.detach())) / world
            result.losses.append(loss)
            if on_step:
                on_step(result.steps, total, loss)
            if result.steps in checkpoints and on_checkpoint:
                on_checkpoint(result.steps, acc.unwrap_model(model))
    result.wall_s = time.perf_counter() - t0
    if state_out is not None:
        state = acc.get_state_dict(model)  # a collective under ZeRO-3: every rank calls it
        if rank == 0:
            torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, state_out)
        acc.wait_for_everyone()
    model.eval()
    return acc.unwrap_model(model), result


def train_on_pool(target: str | Path, manifest: Path, indices: Sequence[int], cfg: TrainConfig, *,
                  on_step: Callable[[int, int, float], None] | None = None, state_out: Path | None = None):
    """Load the target and its processor, fine-tune on the manifest's ``indices``: the one place a fine-tune is
    set up, for the in-process path (the fine-tune stage) and every rank of a multi-process one (train_worker).
    Returns (model, processor, TrainResult)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(target, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(target)
    collator = Collator(processor, int(model.config.image_seq_length), max_length=cfg.max_length)
    model, result = train(model, collator, examples(load_manifest(manifest), indices), cfg, on_step=on_step,
                          state_out=state_out)
    return model, processor, result


def merge_for_export(model):
    """LoRA weights merged into the base so vLLM / plain HF can load the checkpoint."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model

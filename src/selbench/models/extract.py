"""Feature-extraction engine shared by the model-based selectors.

- Runs only what a method needs: vision tower + projector + the first ``n_blocks`` decoder blocks (the layer
  list is cut for the call; the LM head never runs unless logits are asked for).
- Captures decoder-block outputs and ``self_attn.o_proj`` outputs with forward hooks (``hidden_states[k]``
  changes meaning on a cut model, hooks do not).
- Computes one layer's attention from its own queries and keys, reduced at once — no layer's full attention is
  kept, and the model runs with memory-efficient attention. Two kinds of per-layer entry: an ``AttnReducer``
  receives the per-head softmax probabilities the model itself uses (RoPE applied, causal and padding masks);
  a ``ModuleAttention`` is handed the layer's attention module and builds its own matrix (XMAS's single
  concatenated-head matrix, ``concat_head_attention``, is not something the model computes).
- Token roles (image / instruction / answer) come from the tokenised input (selbench.models.chat).
- Batches with padding; writes resumable shards; shows a progress bar.
- Splits one extraction over processes (``Sharding``): rank r of W computes the shards s with s % W == r, every
  rank then reads all of them from files — the same shards and the same batches as one process, so the result is
  bit for bit the one-process result. Feature matrices are stored in float16 (``FEATURE_DTYPE``) and read back
  memory-mapped (docs/performance.md, "Sharded extraction").
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from selbench.models.data import Batch, Collator, Example
from selbench.progress import progress_bar

# How feature matrices (one row of d floats per example) are stored: half the bytes of float32, so 665K × 4096
# features are 5.4 GB on disk and memory-mapped. float16 rather than bfloat16: numpy has no bfloat16, and float16's
# 11-bit significand is finer than bfloat16's 8 (the hidden states of a bf16 model carry no more than that); its
# range (±65,504) is checked on every shard. Per-example scores (perplexity, XMAS's alignment) keep their dtype.
FEATURE_DTYPE = np.dtype(np.float16)
MERGED = "merged.npy"  # a finished extraction in its shard folder: all shards in order, one file


class RankError(RuntimeError):
    """A process of a multi-process extraction exited before writing what the others wait for."""


def _nobody_dead() -> str | None:
    return None


@dataclass(frozen=True)
class Sharding:
    """How ``FeatureEngine.run`` splits an extraction: shards of ``size`` examples; this process is rank ``rank`` of
    ``world`` and computes the shards s with s % world == r. ``dead_peer()`` names a process this one waits on that
    has exited (rank 0 waits on the other ranks' shards, they wait on rank 0's merged file), None while all live."""

    rank: int = 0
    world: int = 1
    size: int = 4096
    dead_peer: Callable[[], str | None] = _nobody_dead

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world or self.size < 1:
            raise ValueError(f"sharding: rank {self.rank} of world {self.world}, shard size {self.size}")


def wait_for(paths: Sequence[Path], dead_peer: Callable[[], str | None], *, poll_s: float = 0.05,
             found: Callable[[Path], None] = lambda path: None) -> None:
    """Block until every path exists (another process writes it: a file-based barrier). ``found`` is called once
    per path as it appears. Raises RankError naming the first missing file once ``dead_peer()`` reports a death."""
    missing = list(paths)
    while True:
        dead = dead_peer()  # asked before looking, so files written just before a peer's exit still count
        left = []
        for path in missing:
            if path.exists():
                found(path)
            else:
                left.append(path)
        missing = left
        if not missing:
            return
        if dead is not None:
            raise RankError(f"{dead} before {missing[0]} was written ({len(missing)} file(s) missing)")
        time.sleep(poll_s)


def _stored(rows: np.ndarray, dtype: np.dtype | None, where: str) -> np.ndarray:
    """``rows`` as stored: cast to ``dtype`` (None: as they are); float16 must hold every finite value."""
    if dtype is None or rows.dtype == dtype:
        return rows
    finite = np.abs(rows[np.isfinite(rows)]) if dtype == np.float16 else np.zeros(0)
    if finite.size and finite.max() > np.finfo(np.float16).max:
        raise ValueError(f"{where}: a feature of magnitude {finite.max():.4g} overflows float16 (max 65,504)")
    return rows.astype(dtype)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The LM's decoder blocks for LLaVA-style models (llava-hf, Qwen2/2.5-VL in transformers ≥ 5)."""
    for path in ("model.language_model.layers", "language_model.model.layers", "model.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise TypeError(f"cannot find decoder layers in {type(model).__name__}")


def _language_model(model):
    return model.model.language_model


@dataclass
class Captured:
    """What hooks saw during one forward."""

    blocks: dict[int, torch.Tensor] = field(default_factory=dict)  # block index → [B, T, D]
    oproj: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → [B, T, D]
    attention: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → reduce(attn) result
    logits: torch.Tensor | None = None


# attention reducer: (probs [B, H, T, T] float32, batch) → tensor kept in Captured.attention
AttnReducer = Callable[[torch.Tensor, Batch], torch.Tensor]


@dataclass(frozen=True)
class ModuleAttention:
    """A per-layer attention entry that builds its own matrix from the layer's attention module.

    ``fn(attn_module, hidden_states, position_embeddings, batch)`` runs just before the module's forward, with
    the module's own input (the normed hidden states) and rotary (cos, sin) if the model passes them; what it
    returns is kept in ``Captured.attention``.
    """

    fn: Callable[[torch.nn.Module, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None, Batch], torch.Tensor]


# what FeatureEngine.forward / run accept per layer in ``attention=``
LayerAttention = AttnReducer | ModuleAttention


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def attention_probs(attn_module, hidden_states: torch.Tensor, position_embeddings, key_mask: torch.Tensor
                    ) -> torch.Tensor:
    """Softmax attention probabilities [B, H, T, T] of one Llama-style attention module, computed from its
    own q/k projections: what eager attention would return, for this layer only."""
    B, T, _ = hidden_states.shape
    hd = attn_module.head_dim
    q = attn_module.q_proj(hidden_states).view(B, T, -1, hd).transpose(1, 2).float()
    k = attn_module.k_proj(hidden_states).view(B, T, -1, hd).transpose(1, 2).float()
    if hasattr(attn_module, "q_norm"):  # Qwen3-style per-head norms
        q, k = attn_module.q_norm(q), attn_module.k_norm(k)
    cos, sin = (t.float().unsqueeze(1) for t in position_embeddings)
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * (hd ** -0.5)
    causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
    allowed = causal[None, None] & key_mask[:, None, None, :].bool()
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)  # fully masked rows (left padding) → 0


def _causal_padding_mask(T: int, key_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, T] bool: query t may attend to key s iff s ≤ t and s is not padding (as the model masks)."""
    causal = torch.ones(T, T, dtype=torch.bool, device=key_mask.device).tril()
    return causal[None] & key_mask[:, None, :].bool()


def concat_head_attention(attn_module, hidden_states: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """XMAS's attention matrix (arXiv 2510.01454, Eq. 4 and the sentence after it) of one layer: [B, T, T].

    A = softmax(Q Kᵀ / √D) with Q, K the raw ``q_proj`` / ``k_proj`` outputs, all heads concatenated (D =
    heads · head_dim, the hidden size for the usual models): ONE matrix per layer, not a mean of per-head
    softmaxes. Raw means no RoPE and no per-head q/k norms. Causal and padding masks as the model uses them;
    fully masked query rows (left padding) are 0.
    """
    q = attn_module.q_proj(hidden_states).float()  # [B, T, H·hd]
    k = attn_module.k_proj(hidden_states).float()  # [B, T, H_kv·hd]
    if k.shape[-1] != q.shape[-1]:
        # Grouped-query attention: repeat each k head for the q heads that share it (as the model's own
        # repeat_kv pairs them), then concatenate, so q head h meets its own k head in Q Kᵀ. (The XMAS
        # reference repeat_interleaves single channels, not heads; its TinyLLaVA proxy has no GQA.)
        B, T, _ = k.shape
        hd = attn_module.head_dim
        n_q, n_kv = q.shape[-1] // hd, k.shape[-1] // hd
        k = k.view(B, T, n_kv, hd).repeat_interleave(n_q // n_kv, dim=2).reshape(B, T, n_q * hd)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    allowed = _causal_padding_mask(q.shape[1], key_mask)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


class FeatureEngine:
    def __init__(self, model, processor, n_image_tokens: int, *, device: str | None = None,
                 dtype: torch.dtype | None = None, batch_size: int = 32, max_length: int | None = None,
                 sharding: Sharding = Sharding()):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = model.to(self.device, self.dtype).eval()
        self.collator = Collator(processor, n_image_tokens, max_length=max_length)
        self.batch_size = batch_size
        self.sharding = sharding

    @contextmanager
    def truncated(self, n_blocks: int | None) -> Iterator[None]:
        """Run only the first ``n_blocks`` decoder blocks (None: all)."""
        lm = _language_model(self.model)
        full = lm.layers
        if n_blocks is not None:
            if not 1 <= n_blocks <= len(full):
                raise ValueError(f"n_blocks={n_blocks} outside 1..{len(full)}")
            lm.layers = torch.nn.ModuleList(list(full)[:n_blocks])
        try:
            yield
        finally:
            lm.layers = full

    @torch.no_grad()
    def forward(self, batch: Batch, *, n_blocks: int | None, blocks: Sequence[int] = (),
                oproj: Sequence[int] = (), attention: dict[int, LayerAttention] | None = None,
                logits: bool = False) -> Captured:
        cap = Captured()
        layers = decoder_layers(self.model)
        handles = []
        for i in blocks:
            handles.append(layers[i].register_forward_hook(
                lambda m, a, out, i=i: cap.blocks.__setitem__(i, out[0] if isinstance(out, tuple) else out)))
        for i in oproj:
            handles.append(layers[i].self_attn.o_proj.register_forward_hook(
                lambda m, a, out, i=i: cap.oproj.__setitem__(i, out)))
        for i, entry in (attention or {}).items():
            def pre(mod, args, kwargs, i=i, entry=entry):
                hs = kwargs.get("hidden_states", args[0] if args else None)
                if isinstance(entry, ModuleAttention):
                    cap.attention[i] = entry.fn(mod, hs, kwargs.get("position_embeddings"), batch)
                else:
                    probs = attention_probs(mod, hs, kwargs["position_embeddings"], batch.attention_mask)
                    cap.attention[i] = entry(probs, batch)
            handles.append(layers[i].self_attn.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            with self.truncated(n_blocks):
                if logits:
                    out = self.model(**batch.model_inputs())
                    cap.logits = out.logits
                else:
                    self.model.model(**batch.model_inputs())
        finally:
            for h in handles:
                h.remove()
        return cap

    def run(self, examples: Sequence[Example], reduce: Callable[[Batch, Captured], np.ndarray], *,
            n_blocks: int | None, blocks: Sequence[int] = (), oproj: Sequence[int] = (),
            attention: dict[int, LayerAttention] | None = None, logits: bool = False,
            shard_dir: Path | None = None, dtype: npt.DTypeLike | None = None,
            desc: str = "extracting") -> np.ndarray:
        """Per-example rows of ``reduce``, computed in batches of ``batch_size`` within shards of ``sharding.size``
        examples, stored as ``dtype`` (``FEATURE_DTYPE`` for feature matrices; None: as ``reduce`` returns them).

        Without ``shard_dir``: in memory, in this process. With it, each finished shard is saved as
        ``shard-XXXXX.npy`` (under a temporary name, then renamed: a killed run leaves no partial shard under a real
        name) and existing shards are reused, so a killed run resumes. Rank r computes the shards s with
        s % world == r; rank 0 waits for all of them, merges them in order into ``merged.npy`` and removes them,
        the other ranks wait for that file. Every rank returns it memory-mapped (read-only); a folder that already
        holds it is a finished extraction and is read as it is.
        """
        n, sh = len(examples), self.sharding
        n_shards = max(1, math.ceil(n / sh.size))
        store = np.dtype(dtype) if dtype is not None else None

        def compute(s: int, advance: Callable[..., None]) -> np.ndarray:
            lo, hi = s * sh.size, min(n, (s + 1) * sh.size)
            chunk = []
            for b in range(lo, hi, self.batch_size):
                batch = self.collator(examples[b:min(hi, b + self.batch_size)]).to(self.device, self.dtype)
                cap = self.forward(batch, n_blocks=n_blocks, blocks=blocks, oproj=oproj, attention=attention,
                                   logits=logits)
                chunk.append(reduce(batch, cap))
                advance(len(batch.input_ids))
            rows = np.concatenate(chunk) if chunk else np.zeros((0,), dtype=np.float32)
            return _stored(rows, store, f"{desc}: shard {s} (examples {lo}..{hi - 1})")

        if n == 0:
            return _stored(np.zeros((0,), dtype=np.float32), store, desc)
        if shard_dir is None:
            if sh.world > 1:
                raise ValueError(f"{desc}: a {sh.world}-process extraction needs a shard_dir (the ranks exchange "
                                 "their shards as files)")
            with progress_bar(desc, total=n) as advance:
                return np.concatenate([compute(s, advance) for s in range(n_shards)])
        merged = shard_dir / MERGED
        paths = [shard_dir / f"shard-{s:05d}.npy" for s in range(n_shards)]
        if not merged.exists():
            shard_dir.mkdir(parents=True, exist_ok=True)
            with progress_bar(desc, total=n) as advance:
                for s in range(sh.rank, n_shards, sh.world):
                    if merged.exists():  # rank 0 merged shards this rank had left from an earlier run
                        break
                    if not paths[s].exists():
                        rows = compute(s, advance)
                        tmp = paths[s].with_suffix(f".{os.getpid()}.tmp.npy")  # a rank's own name: no shared file
                        np.save(tmp, rows)
                        try:
                            tmp.replace(paths[s])
                        except FileNotFoundError:  # rank 0 merged meanwhile (a resumed run) and swept temporaries
                            if merged.exists():
                                break
                            raise
                    else:
                        advance(min(n, (s + 1) * sh.size) - s * sh.size)
                if sh.rank == 0:
                    others = [p for s, p in enumerate(paths) if s % sh.world]
                    wait_for(others, sh.dead_peer, found=lambda p: advance(_rows(p)))
                    _merge(paths, merged, n, sh.size, store)
                else:
                    wait_for([merged], sh.dead_peer)
        return _load_merged(merged, n)


def _rows(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])


def _merge(paths: Sequence[Path], merged: Path, n: int, size: int, dtype: np.dtype | None) -> None:
    """Concatenate the shards, in order, into ``merged`` (written under a temporary name, then renamed), then
    remove them. Every shard must hold its examples' rows, with the first shard's row shape, in ``dtype`` (None:
    the first shard's)."""
    first = np.load(paths[0], mmap_mode="r")
    shape, dtype = first.shape[1:], dtype or first.dtype
    tmp = merged.with_name("merged.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *shape))
    for s, path in enumerate(paths):
        try:
            part = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"shard {path} cannot be read ({e}); remove it to recompute it") from e
        lo, hi = s * size, min(n, (s + 1) * size)
        if part.shape != (hi - lo, *shape) or part.dtype != dtype:
            raise ValueError(f"shard {path} holds {part.dtype} {part.shape}, expected {dtype} {(hi - lo, *shape)} "
                             f"for examples {lo}..{hi - 1}: left by another extraction? Remove the folder")
        out[lo:hi] = part
    out.flush()
    del out
    tmp.replace(merged)
    for path in [*paths, *merged.parent.glob("shard-*.tmp.npy")]:
        path.unlink(missing_ok=True)


def _load_merged(merged: Path, n: int) -> np.ndarray:
    arr = np.load(merged, mmap_mode="r")
    if len(arr) != n:
        raise ValueError(f"{merged} holds {len(arr)} rows for {n} examples: left by another extraction? "
                         "Remove the folder")
    return arr


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over T of x [B, T, D] where mask [B, T] is true; zeros where a row has no such token."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)

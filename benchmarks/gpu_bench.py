"""GPU benchmark (lent H100/H200): one script, one call, prints a Markdown table for docs/performance.md.

    python benchmarks/gpu_bench.py --out $OUT/gpu.json
    python benchmarks/gpu_bench.py --smoke --out /tmp/gpu.json   # same code, tiny shapes, CPU (tests run this)

Measures, on a LLaVA-1.5-7B-shaped model (CLIP ViT-L/14-336 + Llama-7B shapes, random weights, bf16):
1. extraction samples/s: vision + projector + first decoder block (PRISM/ScalSelect path, our engine) vs the
   full forward with logits, batch 32, 576 image tokens + 64 text tokens;
2. selection math at 665K × 4096: PRISM's O(N·d) redundancy and ScalSelect's exact Gram-eigh leverage;
3. one LoRA (r 128) train step, batch 8, 576 image + 512 text tokens: samples/s and MFU. Model FLOPs of a LoRA
   step ≈ 4·N·T (2·N·T forward, 2·N·T backward for the activations' gradients; frozen weights get no weight
   gradient; LoRA's own matmuls and gradient checkpointing's re-forward are not counted), with T = 577 for the
   vision tower's parameters and the full sequence for the LLM's; MFU = that / step time / the card's dense bf16
   peak. HFU adds the re-forward (6·N·T).
4. the LoRA step's peak memory (``torch.cuda.max_memory_allocated``) at LLaVA's per-device shape, 16 × 2,048 tokens
   (576 image + 1,472 text), with gradient checkpointing and without it (OOM is a result), and without it at smaller
   batches, to check the estimate in docs/performance.md.

Models are built on the device in their dtype (no fp32 copy on the host: a 7B init there takes minutes).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


# LLaVA-1.5-7B (CLIP ViT-L/14-336 + Llama-7B) and, for --smoke, the same structure at toy size.
FULL = {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14), "hidden": 4096, "inter": 11008, "layers": 32, "heads": 32,
        "text_tokens": 64, "train_text_tokens": 512, "N": 665_000, "d": 4096, "batch": 32, "train_batch": 8}
SMOKE = {"vision": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                        image_size=56, patch_size=14), "hidden": 128, "inter": 256, "layers": 2, "heads": 4,
         "text_tokens": 8, "train_text_tokens": 16, "N": 2_000, "d": 64, "batch": 2, "train_batch": 2}
# the memory check: (batch, sequence length, gradient checkpointing) — LLaVA's 16 × 2,048 per device both ways
MEMORY = {"full": [(16, 2048, True), (16, 2048, False), (4, 2048, False), (1, 2048, False)],
          "smoke": [(2, 24, True), (2, 24, False)]}
IMAGE_TOKEN = 32000


def llava_config(shape: dict):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(**shape["vision"], projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       num_key_value_heads=shape["heads"], max_position_embeddings=4096)
    n_image = (shape["vision"]["image_size"] // shape["vision"]["patch_size"]) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, image_seq_length=n_image,
                       vision_feature_layer=-2, vision_feature_select_strategy="default")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, warmup=2, reps=5, dev: torch.device = torch.device("cuda")) -> float:
    for _ in range(warmup):
        fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / reps


def lora_peak(model, base, opt, dev: torch.device, dtype, batch: int, seq: int, n_img: int, side: int,
              checkpointing: bool) -> float | str | None:
    """Peak GiB allocated by one LoRA step (forward, backward, AdamW) at ``batch`` × ``seq`` tokens; "OOM" when it
    does not fit; None on CPU (the smoke run checks the code path only)."""
    (base.gradient_checkpointing_enable if checkpointing else base.gradient_checkpointing_disable)()
    ids = torch.randint(0, IMAGE_TOKEN, (batch, seq), device=dev)
    ids[:, 1:1 + n_img] = IMAGE_TOKEN
    pix = torch.randn(batch, 3, side, side, device=dev, dtype=dtype)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        out = model(input_ids=ids, pixel_values=pix, labels=ids)
        out.loss.backward()
        opt.step()
        return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    except torch.OutOfMemoryError:
        return "OOM"
    finally:
        out = None
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="toy shapes on CPU: checks the script, measures nothing")
    args = ap.parse_args(argv)
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    from selbench.models.extract import FeatureEngine

    shape = SMOKE if args.smoke else FULL
    dev = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    res: dict = {"device": "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(0)}
    cfg = llava_config(shape)
    n_img = cfg.image_seq_length
    side = shape["vision"]["image_size"]
    torch.set_default_dtype(dtype)
    with dev:
        model = LlavaForConditionalGeneration(cfg).eval()
    B, T_text = args.batch or shape["batch"], shape["text_tokens"]
    ids = torch.randint(0, IMAGE_TOKEN, (B, n_img + T_text), device=dev)
    ids[:, 1:1 + n_img] = IMAGE_TOKEN
    pix = torch.randn(B, 3, side, side, device=dev, dtype=dtype)
    mask = torch.ones_like(ids)

    class _Batch:  # the engine's batch interface, without a tokenizer
        input_ids, attention_mask, pixel_values = ids, mask, pix
        roles = torch.where(ids == IMAGE_TOKEN, 1, 2).to(torch.int8)

        def model_inputs(self):
            return {"input_ids": ids, "attention_mask": mask, "pixel_values": pix}

    eng = FeatureEngine.__new__(FeatureEngine)
    eng.model, eng.device, eng.dtype = model, dev, dtype
    batch = _Batch()
    with torch.no_grad():
        first = eng.forward(batch, n_blocks=1, blocks=[0])
        assert first.blocks[0].shape == (B, n_img + T_text, shape["hidden"]), first.blocks[0].shape
        t_first = timed(lambda: eng.forward(batch, n_blocks=1, blocks=[0]), dev=dev)
        t_first_attn = timed(lambda: eng.forward(batch, n_blocks=1, blocks=[0],
                                                 attention={0: lambda p, b: p.mean(1)[:, :, :1 + n_img].sum(1)}),
                             dev=dev)
        t_full = timed(lambda: model(**batch.model_inputs()), reps=3, dev=dev)
    res["extract_first_block_sps"] = B / t_first
    res["extract_first_block_attention_sps"] = B / t_first_attn
    res["extract_full_forward_sps"] = B / t_full
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    N, d = shape["N"], shape["d"]
    x = torch.randn(N, d, device=dev, dtype=torch.float32)

    def prism():
        u = x - x.mean(1, keepdim=True)
        u = u / u.norm(dim=1, keepdim=True)
        return (u @ u.sum(0) - 1) / (N - 1)
    res["prism_665k_s" if not args.smoke else "prism_smoke_s"] = timed(prism, 1, 3, dev=dev)

    def scal():
        xc = x - x.mean(0)
        g = (xc.T @ xc).double()  # fp32 accumulation on the tensor cores, eigh in float64
        lam, v = torch.linalg.eigh(g)
        lam, v = lam.flip(0), v.flip(1)
        k = int((lam.cumsum(0) < 0.9 * lam.sum()).sum()) + 1
        return ((xc @ v[:, :k].float()) ** 2 / lam[:k].float()).sum(1)
    res["scalselect_exact_665k_s" if not args.smoke else "scalselect_smoke_s"] = timed(scal, 1, 3, dev=dev)
    x = None  # free the 11 GB before the LoRA model
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    with dev:
        model = LlavaForConditionalGeneration(cfg)
    model.gradient_checkpointing_enable()
    model = get_peft_model(model, LoraConfig(r=128, lora_alpha=256, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    Bt, T = shape["train_batch"], n_img + shape["train_text_tokens"]
    ids = torch.randint(0, IMAGE_TOKEN, (Bt, T), device=dev)
    ids[:, 1:1 + n_img] = IMAGE_TOKEN
    pix = torch.randn(Bt, 3, side, side, device=dev, dtype=dtype)

    def step():
        out = model(input_ids=ids, pixel_values=pix, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    t_step = timed(step, 2, 5, dev=dev)
    n_vision = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n)
    n_llm = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" not in n and "lora_" not in n)
    fwd = 2 * (n_vision * (n_img + 1) + n_llm * T) * Bt  # forward FLOPs of one step
    card = None if args.smoke else 989e12  # dense bf16 peak of an H100/H200 SXM
    res.update(lora_step_s=t_step, lora_samples_per_s=Bt / t_step,
               lora_model_tflops=2 * fwd / t_step / 1e12,  # forward + activation-gradient backward
               lora_mfu=2 * fwd / t_step / card if card else None,
               lora_hfu=3 * fwd / t_step / card if card else None,
               peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None)
    base = model.get_base_model()
    for b, t, ckpt in MEMORY["smoke" if args.smoke else "full"]:
        res[f"lora_peak_gib_b{b}_t{t}_{'ckpt' if ckpt else 'no_ckpt'}"] = lora_peak(
            model, base, opt, dev, dtype, b, t, n_img, side, ckpt)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    print("| metric | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return res


if __name__ == "__main__":
    main()

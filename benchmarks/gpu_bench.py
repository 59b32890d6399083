"""GPU benchmark (lent H100/H200): one script, one call, prints a Markdown table for docs/performance.md.

    python benchmarks/gpu_bench.py --out $OUT/gpu.json

Measures, on a LLaVA-1.5-7B-shaped model (CLIP ViT-L/14-336 + Llama-7B shapes, random weights, bf16):
1. extraction samples/s: vision + projector + first decoder block (PRISM/ScalSelect path, our engine) vs the
   full forward with logits, batch 32, 576 image tokens + 64 text tokens;
2. selection math at 665K × 4096: PRISM's O(N·d) redundancy and ScalSelect's exact Gram-eigh leverage;
3. one LoRA (r 128) train step, batch 8: samples/s and MFU (6·N_trainable-free estimate: 2·N·T forward +
   4·N·T backward over all weights for activations' gradients, against the card's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def llava7b_config(layers: int = 32):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000, image_seq_length=576,
                       vision_feature_layer=-2, vision_feature_select_strategy="default")


def timed(fn, warmup=2, reps=5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    from transformers import LlavaForConditionalGeneration

    from selbench.models.extract import FeatureEngine

    dev = torch.device("cuda")
    res: dict = {"device": torch.cuda.get_device_name(0)}
    model = LlavaForConditionalGeneration(llava7b_config()).to(dev, torch.bfloat16).eval()
    B, T_text = args.batch, 64
    ids = torch.randint(0, 32000, (B, 576 + T_text), device=dev)
    ids[:, 1:577] = 32000
    pix = torch.randn(B, 3, 336, 336, device=dev, dtype=torch.bfloat16)
    mask = torch.ones_like(ids)

    class _Batch:  # the engine's batch interface, without a tokenizer
        input_ids, attention_mask, pixel_values = ids, mask, pix
        roles = torch.where(ids == 32000, 1, 2).to(torch.int8)

        def model_inputs(self):
            return {"input_ids": ids, "attention_mask": mask, "pixel_values": pix}

    eng = FeatureEngine.__new__(FeatureEngine)
    eng.model, eng.device, eng.dtype = model, dev, torch.bfloat16
    batch = _Batch()
    with torch.no_grad():
        t_first = timed(lambda: eng.forward(batch, n_blocks=1, blocks=[0]))
        t_first_attn = timed(lambda: eng.forward(batch, n_blocks=1, blocks=[0],
                                                 attention={0: lambda p, b: p.mean(1)[:, :, :577].sum(1)}))
        t_full = timed(lambda: model(**batch.model_inputs()), reps=3)
    res["extract_first_block_sps"] = B / t_first
    res["extract_first_block_attention_sps"] = B / t_first_attn
    res["extract_full_forward_sps"] = B / t_full
    del model
    torch.cuda.empty_cache()

    N, d = 665_000, 4096
    x = torch.randn(N, d, device=dev, dtype=torch.float32)
    def prism():
        u = x - x.mean(1, keepdim=True)
        u = u / u.norm(dim=1, keepdim=True)
        return (u @ u.sum(0) - 1) / (N - 1)
    res["prism_665k_s"] = timed(prism, 1, 3)
    def scal():
        xc = x - x.mean(0)
        g = (xc.T @ xc).double()  # fp32 accumulation on the tensor cores, eigh in float64
        lam, v = torch.linalg.eigh(g)
        lam, v = lam.flip(0), v.flip(1)
        k = int((lam.cumsum(0) < 0.9 * lam.sum()).sum()) + 1
        return ((xc @ v[:, :k].float()) ** 2 / lam[:k].float()).sum(1)
    res["scalselect_exact_665k_s"] = timed(scal, 1, 3)
    x = None  # free the 11 GB before the LoRA model
    torch.cuda.empty_cache()

    from peft import LoraConfig, get_peft_model

    model = LlavaForConditionalGeneration(llava7b_config()).to(dev, torch.bfloat16)
    model.gradient_checkpointing_enable()
    model = get_peft_model(model, LoraConfig(r=128, lora_alpha=256, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    Bt, T = 8, 576 + 512
    ids = torch.randint(0, 32000, (Bt, T), device=dev)
    ids[:, 1:577] = 32000
    pix = torch.randn(Bt, 3, 336, 336, device=dev, dtype=torch.bfloat16)

    def step():
        out = model(input_ids=ids, pixel_values=pix, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    t_step = timed(step, 2, 5)
    n_params = sum(p.numel() for p in model.parameters())
    flops = 6 * n_params * Bt * T  # forward 2NT + backward 4NT; gradient checkpointing's re-forward not counted
    peak = {"H100": 989e12, "H200": 989e12}
    card = next((v for k, v in peak.items() if k in res["device"]), 989e12)
    res.update(lora_step_s=t_step, lora_samples_per_s=Bt / t_step, lora_mfu=flops / t_step / card,
               peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30)
    json.dump(res, open(args.out, "w"), indent=1)
    print("| metric | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")


if __name__ == "__main__":
    main()

"""A tiny judge for the judge-path tests: a one-block Llama whose weights are set so that, greedy, it answers every
prompt with the same reply and stops — served by the CPU vLLM like any judge model, so the tests exercise the real
plumbing (the URL each lmms-eval task builds, the model name, the key, lmms-eval's own parsing of the reply).

How: the decoder block's output projections are zero, so the last hidden state is the current token's embedding;
embeddings mark "one of the reply's tokens, number i" in their own dimension, and the LM head maps "any other
token" to the reply's first token and reply token i to token i + 1 (the last to EOS). A bigram model, one path.

The reply ``1 0.5\\tB`` is read by each judge-scored task as a usable score: MM-Vet takes the first space-separated
field (1 → 1.0), LLaVA-Bench the first two numbers of the first line (1 and 0.5 → relative score 50.0), MMBench's
matcher the one option letter among the whitespace-separated words (B). Its characters are distinct, so its tokens
are distinct — a bigram model needs that.
"""

from __future__ import annotations

from pathlib import Path

REPLY = "1 0.5\tB"
SERVED = "tiny-judge"
KEY_ENV, KEY = "SELBENCH_TEST_JUDGE_KEY", "sk-test-judge-4d1f"  # the tests' judge key: never in a result
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}judge:{% endif %}")


def build_judge(out: Path, reply: str = REPLY) -> Path:
    """Save the scripted judge (model + a byte-level BPE tokenizer of its own, plain chat template) at ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selbench.models.tiny import train_tokenizer

    tok = train_tokenizer([reply, "Compare the ground truth and prediction. Correctness score.", CHAT_TEMPLATE])
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 16384
    ids = tok.encode(reply, add_special_tokens=False)
    assert len(set(ids)) == len(ids) and tok.decode(ids) == reply, (reply, ids)
    eos = tok.eos_token_id
    assert eos is not None and eos not in ids
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16384,
                      tie_word_embeddings=False, eos_token_id=eos, bos_token_id=tok.bos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        block = model.model.layers[0]
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, 0] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[ids[0], 0] = 10.0
        for i, t in enumerate(ids):
            emb[t, 1 + i] = 1.0
            head[ids[0], 1 + i] = -30.0
            nxt = ids[i + 1] if i + 1 < len(ids) else eos
            head[nxt, 1 + i] += 20.0
    model.generation_config.eos_token_id = eos
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out

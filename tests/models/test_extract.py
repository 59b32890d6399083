"""The extraction engine against the plain HF model: same block outputs when cut, same attention as eager."""

import torch

from selbench.models import tiny
from selbench.models.chat import ANSWER, IMAGE, INSTRUCTION
from selbench.models.extract import FeatureEngine, ModuleAttention, concat_head_attention
from selbench.pool.manifest import examples


def test_truncated_blocks_and_recomputed_attention_match_eager(small_world, small_pool) -> None:
    model, processor = tiny.load(small_world / "models" / "target", attn="eager")
    eng = FeatureEngine(model, processor, model.config.image_seq_length, device="cpu", batch_size=8)
    # a batch mixing image rows, a text-only row and different lengths (padding)
    has = small_pool.has_image.to_numpy()
    rows = [int(i) for i in has.nonzero()[0][:3]] + [int((~has).nonzero()[0][0])]
    batch = eng.collator(examples(small_pool, rows))
    assert batch.pixel_values.shape[0] == 3 and (batch.attention_mask == 0).any()
    with torch.no_grad():
        ref = model(**batch.model_inputs(), output_hidden_states=True, output_attentions=True)
    keep = {i: (lambda probs, b: probs) for i in (0, 2)}
    cap = eng.forward(batch, n_blocks=3, blocks=[0, 2], attention=keep)
    mask = batch.attention_mask.bool()
    for i in (0, 2):
        torch.testing.assert_close(cap.blocks[i][mask], ref.hidden_states[i + 1][mask], rtol=1e-4, atol=1e-5)
        # compare on real (non-padding) query rows and key columns
        ours, theirs = cap.attention[i], ref.attentions[i]
        for b in range(len(rows)):
            m = mask[b]
            torch.testing.assert_close(ours[b][:, m][:, :, m], theirs[b][:, m][:, :, m], rtol=1e-4, atol=1e-6)
    # the cut is undone afterwards
    assert len(model.model.language_model.layers) == model.config.text_config.num_hidden_layers


def test_roles_come_from_the_tokenised_input(small_world, small_pool) -> None:
    _, processor = tiny.load(small_world / "models" / "target")
    from selbench.models.data import Collator

    col = Collator(processor, 16)
    row = int(small_pool.has_image.to_numpy().nonzero()[0][0])
    batch = col(examples(small_pool, [row]))
    roles = batch.roles[0]
    assert int((roles == IMAGE).sum()) == 16
    text = processor.tokenizer.decode(batch.input_ids[0][roles == ANSWER])
    assert text.strip().endswith("</s>") and small_pool.turns(row)[1][1] in text
    instr = processor.tokenizer.decode(batch.input_ids[0][roles == INSTRUCTION])
    assert instr.strip() == small_pool.turns(row)[0][1]


def test_concat_head_attention_repeats_kv_heads_under_gqa() -> None:
    """Eq. 4 of XMAS with grouped-query attention: each k head is repeated for the q heads sharing it, then all
    heads are concatenated; a brute-force loop over query rows gives the same matrix."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    attn = LlamaAttention(cfg, layer_idx=0).eval()
    x = torch.randn(2, 7, 64)
    key_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])  # second row right-padded
    with torch.no_grad():
        ours = concat_head_attention(attn, x, key_mask)
        q = x @ attn.q_proj.weight.T  # [B, T, 4·16]
        k_heads = (x @ attn.k_proj.weight.T).view(2, 7, 2, 16)
        k = torch.cat([k_heads[:, :, h // 2] for h in range(4)], dim=-1)  # q head h uses k head h // 2
    for b in range(2):
        for i in range(7):
            keys = [j for j in range(i + 1) if key_mask[b, j]]
            expected = torch.zeros(7)
            expected[keys] = torch.softmax(torch.stack([q[b, i] @ k[b, j] for j in keys]) / 8.0, dim=0)  # √64
            torch.testing.assert_close(ours[b, i], expected, rtol=0, atol=1e-6)


def test_module_attention_entries_see_the_module_and_its_input(small_world, small_pool) -> None:
    """A ModuleAttention entry gets the layer's attention module and that module's own input, next to the
    per-head-probability reducers the other selectors use."""
    model, processor = tiny.load(small_world / "models" / "target")
    eng = FeatureEngine(model, processor, model.config.image_seq_length, device="cpu", batch_size=4)
    batch = eng.collator(examples(small_pool, [0, 1]))
    seen = {}

    def probe(mod, hs, pos, b):
        seen["module"], seen["pos"] = mod, pos
        return concat_head_attention(mod, hs, b.attention_mask)

    cap = eng.forward(batch, n_blocks=2, attention={0: (lambda probs, b: probs.mean(1)), 1: ModuleAttention(probe)})
    assert seen["module"] is model.model.language_model.layers[1].self_attn and seen["pos"] is not None
    T = batch.input_ids.shape[1]
    assert cap.attention[0].shape == cap.attention[1].shape == (2, T, T)

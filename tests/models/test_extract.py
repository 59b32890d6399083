"""The extraction engine against the plain HF model: same block outputs when cut, same attention as eager."""

import torch

from selbench.models import tiny
from selbench.models.chat import ANSWER, IMAGE, INSTRUCTION
from selbench.models.extract import FeatureEngine
from selbench.selectors._features import examples


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

"""Greedy generation with the shared chat template (HF backend; the vLLM backend lives in evaluators)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from selbench.models.data import Collator, Example


def prompt_lengths(processor, n_image_tokens: int, questions: Sequence[tuple[str, bytes | None]]) -> list[int]:
    """Tokens of each question's generation prompt (chat template, image tokens included), as generate_answers
    feeds them to the model."""
    collator = Collator(processor, n_image_tokens)
    return [len(collator.encode(Example([("user", q)], img), generation_prompt=True).input_ids) for q, img in questions]


@torch.no_grad()
def generate_answers(model, processor, n_image_tokens: int, questions: Sequence[tuple[str, bytes | None]],
                     *, batch_size: int = 32, max_new_tokens: int = 16) -> list[str]:
    collator = Collator(processor, n_image_tokens, padding_side="left")
    tok = processor.tokenizer
    out: list[str] = []
    model.eval()
    for s in range(0, len(questions), batch_size):
        chunk = questions[s:s + batch_size]
        batch = collator([Example([("user", q)], img) for q, img in chunk], generation_prompt=True)
        batch = batch.to(model.device, dtype=model.dtype)
        gen = model.generate(**batch.model_inputs(), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, batch.input_ids.shape[1]:]
        out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return out

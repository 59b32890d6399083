"""Conversation → token ids with per-token roles, located from the tokenised input (offset mapping), never
from hard-coded positions. One template for training, feature extraction and generation, so that what a
selector sees is exactly what the fine-tune trains on.

Template (LLaVA-1.5 / vicuna_v1 without the system line): ``USER: <image>\\n{q} ASSISTANT: {a}</s>USER: ...``
The image tag is expanded to ``n_image_tokens`` copies, as ``LlavaProcessor`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selbench.pool.llava import IMAGE_TOKEN

EOS = "</s>"
# Token roles: what each position of the input is.
TEMPLATE, IMAGE, INSTRUCTION, ANSWER = 0, 1, 2, 3

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: "
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def render(turns: list[tuple[str, str]], has_image: bool, n_image_tokens: int,
           *, generation_prompt: bool = False) -> tuple[str, list[tuple[int, int, int]]]:
    """Text of a conversation plus (start, end, role) character spans of its image, instruction and answer parts."""
    parts: list[tuple[str, int]] = []
    for t, (role, text) in enumerate(turns):
        if role == "user":
            parts.append(("USER: ", TEMPLATE))
            if t == 0 and has_image:
                parts.append((IMAGE_TOKEN * n_image_tokens, IMAGE))
                parts.append(("\n", TEMPLATE))
            parts.append((text, INSTRUCTION))
            parts.append((" ", TEMPLATE))
        else:
            parts.append(("ASSISTANT: ", TEMPLATE))
            parts.append((text + EOS, ANSWER))  # the model must learn to stop: EOS is part of the answer
    if generation_prompt:
        parts.append(("ASSISTANT:", TEMPLATE))
    rendered, spans, pos = "", [], 0
    for s, part_role in parts:
        spans.append((pos, pos + len(s), part_role))
        rendered += s
        pos += len(s)
    return rendered, spans


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [T]
    roles: np.ndarray  # int8 [T]: TEMPLATE / IMAGE / INSTRUCTION / ANSWER

    @property
    def labels(self) -> np.ndarray:
        """Loss only on assistant tokens (LLaVA's recipe)."""
        return np.where(self.roles == ANSWER, self.input_ids, -100)


def encode(tokenizer, turns: list[tuple[str, str]], has_image: bool, n_image_tokens: int,
           *, max_length: int | None = None, generation_prompt: bool = False) -> Encoded:
    text, spans = render(turns, has_image, n_image_tokens, generation_prompt=generation_prompt)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    roles = np.zeros(len(ids), dtype=np.int8)
    starts = np.asarray([s for s, _, _ in spans])
    for k, (a, b) in enumerate(enc["offset_mapping"]):
        # A byte-level token carries its leading space (" blue"): its role is that of its last character.
        j = int(np.searchsorted(starts, max(a, b - 1), side="right")) - 1
        roles[k] = spans[j][2]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    n_img = int((ids == image_id).sum())
    if has_image and n_img != n_image_tokens:
        raise ValueError(f"expected {n_image_tokens} image tokens, tokenizer produced {n_img}")
    roles[ids == image_id] = IMAGE
    if max_length is not None and len(ids) > max_length:
        if has_image and int(np.flatnonzero(ids == image_id)[-1]) >= max_length:
            raise ValueError(f"max_length {max_length} cuts through the image tokens")
        ids, roles = ids[:max_length], roles[:max_length]
    return Encoded(ids, roles)

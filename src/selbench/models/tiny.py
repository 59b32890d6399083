"""Tiny LLaVA-architecture VLMs built from transformers configs (random init), with a BPE tokenizer trained
locally on the world's text. Saved and loaded with ``save_pretrained`` / ``from_pretrained`` like any HF model,
so the real path (llava-hf/llava-1.5-7b-hf …) is the same code with another directory.

Image-token count must agree in three places: processor ``patch_size`` / ``num_additional_image_tokens``,
config ``image_seq_length`` and ``vision_feature_select_strategy`` ("default" drops CLIP's CLS token).
Head dims are 32 so vLLM's CPU attention (head_dim ∈ {32, 64, 80, …}) can serve the target.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from selbench.models.chat import CHAT_TEMPLATE, EOS, IMAGE_TOKEN

PAD = "<pad>"
BOS = "<s>"
UNK = "<unk>"


class TinyVLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 344
    max_positions: int = 256
    seed: int = 0

    @property
    def n_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


TARGET = TinyVLMConfig()
PROXY = TinyVLMConfig(text_hidden=64, text_layers=4, text_heads=2, text_intermediate=172, seed=1)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 768):
    """Byte-level BPE (GPT-2 style: lossless decode, exact offsets) trained on the given text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, BOS, EOS, UNK, IMAGE_TOKEN]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, extra_special_tokens={"image_token": IMAGE_TOKEN},
                                   padding_side="left", model_max_length=TARGET.max_positions)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer, cfg: TinyVLMConfig):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    size = cfg.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_model(tokenizer, cfg: TinyVLMConfig):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 2,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                              image_size=cfg.image_size, patch_size=cfg.patch_size,
                              projection_dim=cfg.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                       intermediate_size=cfg.text_intermediate, num_hidden_layers=cfg.text_layers,
                       num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_heads,
                       max_position_embeddings=cfg.max_positions, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=cfg.n_image_tokens, projector_hidden_act="gelu",
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save(model, processor, out: str | Path) -> Path:
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def load(path: str | Path, *, attn: str = "eager", dtype=None):
    """Load (model, processor) from a directory. ``eager`` attention so selectors can read attention weights."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path, attn_implementation=attn,
                                                          dtype=dtype or torch.float32)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor

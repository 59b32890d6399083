"""Real-path checkpoints from their released parts (selbench.models.assemble), on tiny random-weight components of
the real architecture classes, saved the way the real ones are released:

- target: Llama (Vicuna-like: fp16, no pad token) + a full CLIPModel folder (fp32) + ``mm_projector.bin``;
- proxy: StableLM-2 (bf16, qkv bias, partial rotary, spare vocabulary rows) + CLIP, assembled from parts and
  converted from both TinyLLaVA layouts (Factory and legacy);
- 0.5B proxy option: Qwen2 (tied embeddings) + SigLIP, projector as .safetensors.

Each folder must load with ``LlavaForConditionalGeneration`` + ``AutoProcessor``, hold the components' exact weights
in the LLM's dtype, and generate from an image + text prompt; the Llama and StableLM folders are also served by
vLLM's CPU server (marked vllm/slow)."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from selbench.models.assemble import (
    VICUNA_V1_SYSTEM,
    AssemblyError,
    assemble_llava,
    convert_tinyllava,
    load_projector,
    read_checkpoint,
)

IMAGE_SIZE, PATCH = 32, 8  # 16 patches: CLIP 17 states (CLS), "default" keeps 16; SigLIP 16, "default" keeps 15
CORPUS = ["USER: What colour is the square? ASSISTANT: The square is red.",
          "USER: How many circles are there? ASSISTANT: There are three circles.",
          "Is there an object at the top left? yes no A B C D 0 1 2 3 4 5 6 7 8 9"] * 20
QUESTION = "What is in the image?"


# ---------------------------------------------------------------------------------------------- components


def train_tokenizer(bos: str | None, eos: str, unk: str | None, pad: str | None):
    """A byte-level BPE tokenizer with the special tokens of the released family (none has ``<image>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(t for t in (unk, bos, eos, pad) if t))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:  # Llama tokenizers prepend BOS
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[
            (bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk,
                                   pad_token=pad, model_max_length=512)


def save_llm(folder: Path, family: str, dtype: torch.dtype, *, spare_rows: int = 0, seed: int = 0):
    """A causal LM folder as released: config, weights in ``dtype``, tokenizer. Head dim 32 (vLLM's CPU attention)."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        StableLmConfig,
        StableLmForCausalLM,
    )

    if family == "llama":  # Vicuna-7B-v1.5: <unk> <s> </s>, no pad token, fp16
        tok = train_tokenizer("<s>", "</s>", "<unk>", None)
    elif family == "stablelm":  # stablelm-2-zephyr: GPT-2 style <|endoftext|>
        tok = train_tokenizer(None, "<|endoftext|>", "<|endoftext|>", None)
    else:  # Qwen2: pad = eos = <|endoftext|>, no BOS
        tok = train_tokenizer(None, "<|endoftext|>", None, "<|endoftext|>")
    common = dict(vocab_size=len(tok) + spare_rows, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if family == "llama":
        config, cls = LlamaConfig(**common, tie_word_embeddings=False), LlamaForCausalLM
    elif family == "stablelm":
        config, cls = StableLmConfig(**common, use_qkv_bias=True, partial_rotary_factor=0.25), StableLmForCausalLM
    else:
        config, cls = Qwen2Config(**common, tie_word_embeddings=True), Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = cls(config).to(dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def save_vicuna_tokenizer(folder: Path, vocab_size: int) -> None:
    """Vicuna-7B-v1.5's tokenizer layout: a sentencepiece ``tokenizer.model`` (BPE, byte fallback; unk/bos/eos =
    0/1/2) and a slow-tokenizer ``tokenizer_config.json``, no tokenizer.json."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=vocab_size,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True,
                                   character_coverage=1.0, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    special = {name: {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False}
               for name, text in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, **special, "clean_up_tokenization_spaces": False,
        "legacy": False, "model_max_length": 4096, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                               "unk_token": "<unk>"}))


def save_vision(folder: Path, family: str, seed: int = 1):
    """A full CLIPModel / SiglipModel folder (fp32), as openai/clip-vit-large-patch14-336 and
    google/siglip-so400m-patch14-384 are released, with its image processor."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(seed)
    if family == "clip":
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
        processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                          crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    else:
        model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
        processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model.vision_model


def projector_tensors(vision_hidden: int, text_hidden: int, dtype: torch.dtype, seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = {"0.weight": (text_hidden, vision_hidden), "0.bias": (text_hidden,),
              "2.weight": (text_hidden, text_hidden), "2.bias": (text_hidden,)}
    return {f"model.mm_projector.{k}": (torch.randn(s, generator=g) * 0.1).to(dtype) for k, s in shapes.items()}


def save_projector(path: Path, tensors: dict) -> Path:
    if path.suffix == ".bin":  # LLaVA's stage-1 mm_projector.bin is a torch-saved state dict
        torch.save(tensors, path)
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parts")
    out = {}
    for name, (llm, dtype, spare, vision, proj_file) in {
        "llama-clip": ("llama", torch.float16, 0, "clip", "mm_projector.bin"),
        "stablelm-clip": ("stablelm", torch.bfloat16, 40, "clip", "mm_projector.bin"),
        "qwen2-siglip": ("qwen2", torch.bfloat16, 0, "siglip", "mm_projector.safetensors"),
    }.items():
        d = root / name
        lm = save_llm(d / "llm", llm, dtype, spare_rows=spare)
        tower = save_vision(d / "vision", vision)
        proj = projector_tensors(64, 64, torch.float32)
        out[name] = {"llm_dir": d / "llm", "vision_dir": d / "vision",
                     "projector_file": save_projector(d / proj_file, proj),
                     "lm": lm, "tower": tower, "projector": proj, "dtype": dtype, "vision": vision}
    return out


@pytest.fixture(scope="module")
def assembled(parts, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("assembled")
    return {name: assemble_llava(p["llm_dir"], p["vision_dir"], p["projector_file"], root / name)
            for name, p in parts.items()}


# ---------------------------------------------------------------------------------------------- checks


def image() -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (20, 20, 20))
    img.paste((220, 30, 30), (4, 4, 16, 16))
    return img


def load(folder: Path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def prompt_inputs(processor):
    """The rendered prompt and the model inputs, tokenised as template users do (no special tokens added on top of
    the template's: what vLLM's chat endpoint does too)."""
    messages = [{"role": "user", "content": [{"type": "image", "image": image()}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    return prompt, inputs


def stored_dtypes(folder: Path) -> set[torch.dtype]:
    return {t.dtype for t, _ in read_checkpoint(folder).values()}


def assert_holds_parts(model, p: dict) -> None:
    """The LLaVA model's tensors are the components' tensors (exactly, in the LLM's dtype)."""
    lm, tower, dtype = p["lm"], p["tower"], p["dtype"]
    lang = model.model.language_model
    assert torch.equal(lang.layers[0].self_attn.q_proj.weight, lm.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(lang.layers[1].mlp.down_proj.weight, lm.model.layers[1].mlp.down_proj.weight)
    assert torch.equal(lang.norm.weight, lm.model.norm.weight)
    rows = lm.model.embed_tokens.weight.shape[0]
    assert torch.equal(lang.embed_tokens.weight[:rows], lm.model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight[:rows], lm.lm_head.weight)
    vt = model.model.vision_tower
    assert torch.equal(vt.encoder.layers[0].self_attn.q_proj.weight,
                       tower.encoder.layers[0].self_attn.q_proj.weight.to(dtype))
    assert torch.equal(vt.embeddings.patch_embedding.weight, tower.embeddings.patch_embedding.weight.to(dtype))
    proj = model.model.multi_modal_projector
    assert torch.equal(proj.linear_1.weight, p["projector"]["model.mm_projector.0.weight"].to(dtype))
    assert torch.equal(proj.linear_2.bias, p["projector"]["model.mm_projector.2.bias"].to(dtype))


def assert_generates(model, processor) -> torch.Tensor:
    _, inputs = prompt_inputs(processor)
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == model.config.image_seq_length
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    return out


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", ["llama-clip", "stablelm-clip", "qwen2-siglip"])
def test_assembled_folder_loads_holds_the_parts_and_generates(name: str, parts, assembled) -> None:
    p, folder = parts[name], assembled[name]
    assert stored_dtypes(folder) == {p["dtype"]}  # never upcast: the fp32 vision tower is stored in the LLM's dtype
    model, processor = load(folder)
    assert model.dtype == p["dtype"]
    assert_holds_parts(model, p)
    cfg = model.config
    assert cfg.vision_feature_layer == -2 and cfg.vision_feature_select_strategy == "default"
    assert cfg.image_seq_length == (16 if p["vision"] == "clip" else 15)  # CLIP drops CLS, SigLIP its first patch
    assert processor.tokenizer.convert_ids_to_tokens(cfg.image_token_id) == "<image>"
    assert processor.tokenizer.pad_token_id == cfg.text_config.pad_token_id is not None
    assert processor.tokenizer.padding_side == "left"  # batched generation
    prompt, inputs = prompt_inputs(processor)
    tok = processor.tokenizer
    bos = "<s>" if name == "llama-clip" else ""  # LLaVA's Vicuna prompts start with BOS; StableLM/Qwen add none
    assert prompt == f"{bos}{VICUNA_V1_SYSTEM} USER: <image>\n{QUESTION} ASSISTANT:"
    if bos:  # exactly one, in front
        ids = inputs["input_ids"][0].tolist()
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    answered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
         {"role": "user", "content": "Shape?"}], add_generation_prompt=True)
    assert answered == (f"{bos}{VICUNA_V1_SYSTEM} USER: <image>\nColour? ASSISTANT: red{tok.eos_token}"
                        f"USER: Shape? ASSISTANT:")
    with torch.no_grad():
        assert_generates(model, processor)


def test_vocabulary_grows_like_llava_hf(parts, assembled) -> None:
    """Vicuna-like tokenizer: <image> and <pad> appended (llava-hf: 32000, 32001), rows padded to a multiple of 64,
    new rows drawn near the old rows' mean. StableLM-2 has spare rows: nothing grows. Qwen2 keeps its pad token."""
    records = {n: json.loads((assembled[n] / "assembly.json").read_text()) for n in assembled}
    n_llama = len(parts["llama-clip"]["lm"].model.embed_tokens.weight)
    llama = records["llama-clip"]
    assert llama["added_tokens"] == ["<image>", "<pad>"]
    assert (llama["image_token_id"], llama["pad_token_id"]) == (n_llama, n_llama + 1)
    assert llama["vocab_rows"] == [n_llama, 320]
    model, _ = load(assembled["llama-clip"])
    old = parts["llama-clip"]["lm"].model.embed_tokens.weight.float()
    new = model.model.language_model.embed_tokens.weight[n_llama:].float()
    assert new.shape == (320 - n_llama, 64)
    assert (new - old.mean(0)).norm(dim=1).max() < 0.05 * old.norm(dim=1).mean()  # 1e-5·cov: tight around mu
    stablelm = records["stablelm-clip"]
    assert stablelm["vocab_rows"][0] == stablelm["vocab_rows"][1]
    assert stablelm["added_tokens"] == ["<image>", "<pad>"]
    qwen = records["qwen2-siglip"]
    assert qwen["added_tokens"] == ["<image>"] and qwen["vocab_rows"][1] % 64 == 0
    tied, _ = load(assembled["qwen2-siglip"])
    assert tied.lm_head.weight.data_ptr() == tied.model.language_model.embed_tokens.weight.data_ptr()


def test_assembly_is_deterministic_and_dtype_can_be_chosen(parts, assembled, tmp_path) -> None:
    p = parts["llama-clip"]
    again = assemble_llava(p["llm_dir"], p["vision_dir"], p["projector_file"], tmp_path / "again")
    first, second = read_checkpoint(assembled["llama-clip"]), read_checkpoint(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k][0], second[k][0]) for k in first)
    bf16 = assemble_llava(p["llm_dir"], p["vision_dir"], p["projector_file"], tmp_path / "bf16", dtype="bfloat16")
    assert stored_dtypes(bf16) == {torch.bfloat16}


def _tinyllava_factory(src: Path, p: dict, with_tokenizer: bool = True) -> Path:
    """A TinyLLaVA_Factory checkpoint (TinyLlavaForConditionalGeneration.save_pretrained): language_model.*,
    vision_tower._vision_tower.*, connector._connector.*, text/vision configs inside config.json."""
    from safetensors.torch import save_file

    src.mkdir()
    tensors = {f"language_model.{k}": v for k, v in p["lm"].state_dict().items()}
    for k, (v, _) in read_checkpoint(p["vision_dir"]).items():
        if k.startswith("vision_model."):
            tensors[f"vision_tower._vision_tower.{k}"] = v.to(p["dtype"])
    for k, v in p["projector"].items():
        tensors[k.replace("model.mm_projector.", "connector._connector.")] = v.to(p["dtype"])
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(src / "model.safetensors"))
    vision_cfg = json.loads((p["vision_dir"] / "config.json").read_text())["vision_config"]
    config = {"architectures": ["TinyLlavaForConditionalGeneration"], "model_type": "tinyllava",
              "llm_model_name_or_path": "stabilityai/stablelm-2-zephyr-1_6b",
              "vision_model_name_or_path": "openai/clip-vit-large-patch14-336", "connector_type": "mlp2x_gelu",
              "text_config": json.loads((p["llm_dir"] / "config.json").read_text()),
              "vision_config": {**vision_cfg, "model_type": "clip_vision_model"},
              "vision_feature_layer": -2, "vision_feature_select_strategy": "patch", "image_aspect_ratio": "pad",
              "tokenizer_padding_side": "right", "hidden_size": 64, "vision_hidden_size": 64}
    (src / "config.json").write_text(json.dumps(config))
    if with_tokenizer:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(p["llm_dir"]).save_pretrained(src)
    return src


def _tinyllava_legacy(src: Path, p: dict, vision_tower: str, with_vision: bool = True) -> Path:
    """A bczhou/TinyLLaVA checkpoint (LLaVA's code base): the LLM's model.*/lm_head.* next to
    model.vision_tower.vision_tower.* and model.mm_projector.*, one flat StableLMEpoch config with mm_* keys."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    src.mkdir()
    siglip = "siglip" in vision_tower.lower()
    tensors = dict(p["lm"].state_dict())
    vision = read_checkpoint(p["vision_dir"])
    last = f"encoder.layers.{p['tower'].config.num_hidden_layers - 1}."
    for k, (v, _) in vision.items():
        if not with_vision or not k.startswith("vision_model.") or (siglip and (".head." in k or last in k)):
            continue  # the SigLIP tower was cut before saving (SigLipVisionTower.load_model)
        tensors[f"model.vision_tower.vision_tower.{k}"] = v.to(p["dtype"])
    tensors.update({k: v.to(p["dtype"]) for k, v in p["projector"].items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(src / "model.safetensors"))
    lm = p["lm"].config
    config = {"architectures": ["TinyLlavaStablelmForCausalLM"], "model_type": "tiny_llava_stablelm",
              "vocab_size": lm.vocab_size, "hidden_size": lm.hidden_size, "intermediate_size": lm.intermediate_size,
              "num_hidden_layers": lm.num_hidden_layers, "num_attention_heads": lm.num_attention_heads,
              "num_key_value_heads": lm.num_key_value_heads, "hidden_act": "silu", "rope_pct": 0.25,
              "rope_theta": 10000, "max_position_embeddings": lm.max_position_embeddings, "norm_eps": 1e-5,
              "use_qkv_bias": True, "bos_token_id": lm.bos_token_id, "eos_token_id": lm.eos_token_id,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "initializer_range": 0.02,
              "mm_vision_tower": vision_tower, "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 64,
              "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "use_mm_proj": True,
              "image_aspect_ratio": "pad", "tokenizer_padding_side": "right", "tokenizer_model_max_length": 2048}
    (src / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(p["llm_dir"]).save_pretrained(src)
    return src


def test_tinyllava_layouts_convert_to_the_folder_assembled_from_parts(parts, assembled, tmp_path) -> None:
    """TinyLLaVA-2.0B's layout (stablelm-2-zephyr + CLIP): both layouts give byte-identical weights to
    assemble_llava on the same parts."""
    p = parts["stablelm-clip"]
    reference = read_checkpoint(assembled["stablelm-clip"])
    factory = convert_tinyllava(_tinyllava_factory(tmp_path / "factory", p), tmp_path / "from-factory",
                                vision_dir=p["vision_dir"])
    legacy = convert_tinyllava(_tinyllava_legacy(tmp_path / "legacy", p, "openai/clip-vit-large-patch14-336"),
                               tmp_path / "from-legacy", vision_dir=p["vision_dir"])
    # LLaVA-style checkpoints may leave the frozen tower out: its weights then come from vision_dir
    no_tower = convert_tinyllava(_tinyllava_legacy(tmp_path / "no-tower", p, "openai/clip-vit-large-patch14-336",
                                                   with_vision=False), tmp_path / "from-no-tower",
                                 vision_dir=p["vision_dir"])
    for folder in (factory, legacy, no_tower):
        converted = read_checkpoint(folder)
        assert converted.keys() == reference.keys()
        assert all(torch.equal(converted[k][0], reference[k][0]) for k in reference), folder
        record = json.loads((folder / "assembly.json").read_text())
        assert record["kind"] == "convert-tinyllava" and record["pad_to_square"]  # image_aspect_ratio: pad
        model, processor = load(folder)
        assert model.config.text_config.model_type == "stablelm"
        assert model.config.text_config.rope_parameters["partial_rotary_factor"] == 0.25
        assert_holds_parts(model, p)
        with torch.no_grad():
            assert_generates(model, processor)


def test_legacy_siglip_tinyllava_drops_the_last_layer_and_keeps_every_patch(parts, tmp_path) -> None:
    """bczhou's SigLIP tower deletes the encoder's last layer and the head and feeds all patch states of the new
    last layer (SigLipVisionTower): a tower one layer shorter, layer -1, strategy "full"."""
    from transformers import StableLmForCausalLM

    p = dict(parts["stablelm-clip"])
    p["vision_dir"] = tmp_path / "siglip"
    p["tower"] = save_vision(p["vision_dir"], "siglip")
    assert isinstance(p["lm"], StableLmForCausalLM)
    src = _tinyllava_legacy(tmp_path / "legacy", p, "bczhou/TinyLLaVA-2.0B-SigLIP")
    folder = convert_tinyllava(src, tmp_path / "out", vision_dir=p["vision_dir"])
    model, processor = load(folder)
    cfg = model.config
    assert (cfg.vision_config.num_hidden_layers, cfg.vision_feature_layer) == (2, -1)
    assert cfg.vision_feature_select_strategy == "full" and cfg.image_seq_length == 16
    assert not any(".head." in k for k in read_checkpoint(folder))
    assert_holds_parts(model, p)
    with torch.no_grad():
        assert_generates(model, processor)


def expand2square(img: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """LLaVA's llava/mm_utils.py expand2square (image_aspect_ratio "pad")."""
    w, h = img.size
    if w == h:
        return img
    out = Image.new(img.mode, (max(w, h), max(w, h)), background)
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def test_images_are_padded_to_square_as_llava_does(parts, assembled, tmp_path) -> None:
    from transformers import AutoImageProcessor

    p = parts["llama-clip"]
    wide = Image.new("RGB", (48, 20), (200, 40, 40))
    wide.paste((10, 10, 240), (30, 0, 48, 20))
    encoder = AutoImageProcessor.from_pretrained(p["vision_dir"])
    mean = tuple(int(x * 255) for x in encoder.image_mean)
    _, processor = load(assembled["llama-clip"])
    padded = processor.image_processor(wide, return_tensors="pt")["pixel_values"]
    assert torch.allclose(padded, encoder(expand2square(wide, mean), return_tensors="pt")["pixel_values"], atol=1e-6)
    plain = assemble_llava(p["llm_dir"], p["vision_dir"], p["projector_file"], tmp_path / "plain",
                           pad_to_square=False)
    _, processor = load(plain)
    assert torch.equal(processor.image_processor(wide, return_tensors="pt")["pixel_values"],
                       encoder(wide, return_tensors="pt")["pixel_values"])


def test_vicuna_sentencepiece_tokenizer(parts, tmp_path) -> None:
    """Vicuna's tokenizer.model-only layout: <image> = first new id, <pad> the next (llava-hf: 32000, 32001).
    transformers reads tokenizer.model through sentencepiece's model proto, which needs a matching protobuf
    runtime; where it is missing, the error must say so (and the test says it could not check the rest)."""
    p = parts["llama-clip"]
    llm = tmp_path / "vicuna"
    save_llm(llm, "llama", torch.float16, spare_rows=100)  # 400 rows, as many as the sentencepiece vocabulary
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (llm / f).unlink(missing_ok=True)
    save_vicuna_tokenizer(llm, 400)
    try:
        from sentencepiece import sentencepiece_model_pb2  # noqa: F401
    except Exception as e:  # noqa: BLE001 — the runtime check raises a plain TypeError/ImportError
        with pytest.raises(AssemblyError, match=r"sentencepiece-only tokenizer .*protobuf"):
            assemble_llava(llm, p["vision_dir"], p["projector_file"], tmp_path / "out")
        pytest.skip(f"this environment cannot read sentencepiece tokenizers ({e}); the error is clear")
    folder = assemble_llava(llm, p["vision_dir"], p["projector_file"], tmp_path / "out")
    record = json.loads((folder / "assembly.json").read_text())
    assert (record["image_token_id"], record["pad_token_id"], record["vocab_rows"]) == (400, 401, [400, 448])
    model, processor = load(folder)
    prompt, inputs = prompt_inputs(processor)
    assert prompt.startswith("<s>A chat") and inputs["input_ids"][0].tolist().count(1) == 1
    with torch.no_grad():
        assert_generates(model, processor)


def test_clip_vision_only_folder_works_as_well(parts, tmp_path) -> None:
    from transformers import AutoImageProcessor

    p = parts["llama-clip"]
    vision_only = tmp_path / "clip-vision"
    p["tower"].save_pretrained(vision_only)
    AutoImageProcessor.from_pretrained(p["vision_dir"]).save_pretrained(vision_only)
    folder = assemble_llava(p["llm_dir"], vision_only, p["projector_file"], tmp_path / "out")
    model, _ = load(folder)
    assert_holds_parts(model, p)


# ---------------------------------------------------------------------------------------------- errors


def test_projector_with_unknown_or_missing_keys_is_refused(tmp_path) -> None:
    tensors = projector_tensors(64, 64, torch.float32)
    deeper = save_projector(tmp_path / "mlp3x.bin", {**tensors, "model.mm_projector.4.weight": torch.zeros(64, 64)})
    with pytest.raises(AssemblyError, match=r"mlp3x\.bin: unknown projector key 'model\.mm_projector\.4\.weight'"):
        load_projector(deeper)
    short = save_projector(tmp_path / "short.safetensors",
                           {k: v for k, v in tensors.items() if not k.endswith("2.bias")})
    with pytest.raises(AssemblyError, match=r"short\.safetensors: projector key\(s\) missing: linear_2\.bias"):
        load_projector(short)


def test_mismatched_parts_and_broken_folders_are_refused(parts, assembled, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    p = parts["llama-clip"]
    wide = save_projector(tmp_path / "wide.bin", projector_tensors(96, 64, torch.float32))
    with pytest.raises(AssemblyError, match=r"wide\.bin: projector linear_1\.weight has shape \(64, 96\)"):
        assemble_llava(p["llm_dir"], p["vision_dir"], wide, tmp_path / "a")
    broken = tmp_path / "llm"
    broken.mkdir()
    for f in p["llm_dir"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(broken / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(AssemblyError, match=r"language model weights .*missing: .*layers\.1\.mlp\.up_proj\.weight"):
        assemble_llava(broken, p["vision_dir"], p["projector_file"], tmp_path / "b")
    with pytest.raises(AssemblyError, match=r"not empty"):
        assemble_llava(p["llm_dir"], p["vision_dir"], p["projector_file"], assembled["llama-clip"])
    with pytest.raises(AssemblyError, match=r"model_type 'llama' is not a supported vision encoder"):
        assemble_llava(p["llm_dir"], p["llm_dir"], p["projector_file"], tmp_path / "c")
    assert not [f.name for f in tmp_path.iterdir() if f.name[0] in "abc"]  # nothing half-written is left behind


def test_tinyllava_checkpoints_with_unknown_keys_or_missing_parts_are_refused(parts, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    p = parts["stablelm-clip"]
    src = _tinyllava_factory(tmp_path / "factory", p, with_tokenizer=False)
    with pytest.raises(AssemblyError, match=r"has no tokenizer: pass llm_dir"):
        convert_tinyllava(src, tmp_path / "a", vision_dir=p["vision_dir"])
    with pytest.raises(AssemblyError, match=r"no preprocessor_config\.json: pass vision_dir"):
        convert_tinyllava(src, tmp_path / "a", llm_dir=p["llm_dir"])
    weights = load_file(str(src / "model.safetensors"))
    weights["image_newline"] = torch.zeros(64)
    save_file(weights, str(src / "model.safetensors"))
    with pytest.raises(AssemblyError, match=r"factory/model\.safetensors: unknown key 'image_newline'"):
        convert_tinyllava(src, tmp_path / "a", llm_dir=p["llm_dir"], vision_dir=p["vision_dir"])
    legacy = _tinyllava_legacy(tmp_path / "legacy", p, "openai/clip-vit-large-patch14-336")
    with pytest.raises(AssemblyError, match=r"legacy TinyLLaVA checkpoint: pass vision_dir"):
        convert_tinyllava(legacy, tmp_path / "b")
    config = json.loads((legacy / "config.json").read_text())
    (legacy / "config.json").write_text(json.dumps({**config, "architectures": ["TinyLlavaPhiForCausalLM"]}))
    with pytest.raises(AssemblyError, match=r"architecture 'TinyLlavaPhiForCausalLM' is not supported"):
        convert_tinyllava(legacy, tmp_path / "b", vision_dir=p["vision_dir"])
    with pytest.raises(AssemblyError, match=r"neither a TinyLLaVA_Factory checkpoint"):
        convert_tinyllava(p["llm_dir"], tmp_path / "c")


# ---------------------------------------------------------------------------------------------- vLLM


def _chat(base_url: str, png: bytes) -> dict:
    from selbench.evaluators.vllm_server import SERVED_NAME

    url = "data:image/png;base64," + base64.b64encode(png).decode()
    body = {"model": SERVED_NAME, "max_tokens": 3, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": QUESTION}]}]}
    req = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama-clip", "stablelm-clip"])
def test_vllm_serves_the_assembled_folder(name: str, assembled, tmp_path) -> None:
    """vLLM's CPU server loads the folder (after the project's vision-tower rename), applies its chat template and
    expands the image exactly as the HF processor does (same prompt length), and answers."""
    from selbench.evaluators.vllm_server import VLLMServer, export_for_vllm

    folder = assembled[name]
    exported = export_for_vllm(folder, tmp_path / "vllm-model")
    _, processor = load(folder)
    _, inputs = prompt_inputs(processor)
    png = io.BytesIO()
    image().save(png, format="PNG")
    with VLLMServer(exported, tmp_path / "vllm.log", max_model_len=512, extra_args=["--enforce-eager"]) as server:
        reply = _chat(server.base_url, png.getvalue())
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["usage"]["completion_tokens"] >= 1
    assert reply["usage"]["prompt_tokens"] == inputs["input_ids"].shape[1]


def test_cli_assembles_and_reports_bad_parts_without_a_traceback(parts, tmp_path) -> None:
    from typer.testing import CliRunner

    from selbench.cli import app

    p = parts["llama-clip"]
    args = ["models", "assemble", "--llm", str(p["llm_dir"]), "--vision", str(p["vision_dir"])]
    ok = CliRunner().invoke(app, [*args, "--projector", str(p["projector_file"]), "--out", str(tmp_path / "t")])
    assert ok.exit_code == 0, ok.output
    assert load(tmp_path / "t")[0].config.image_seq_length > 0
    bad = CliRunner().invoke(app, [*args, "--projector", str(tmp_path / "none.bin"), "--out", str(tmp_path / "u")])
    assert bad.exit_code == 1 and "none.bin" in bad.output and "Traceback" not in bad.output

"""Real-path checkpoints: assemble a HF ``LlavaForConditionalGeneration`` folder from released component files.

The papers fine-tune the *stage-1* LLaVA-1.5 checkpoint — Vicuna-7B-v1.5 + CLIP ViT-L/14-336 + the stage-1
projector ``mm_projector.bin`` (mlp2x_gelu) — not ``llava-1.5-7b-hf``, which is already tuned on LLaVA-665K. No such
stage-1 folder is published in the HF LLaVA layout, so ``assemble_llava`` builds one from the three parts, the way
transformers' ``convert_llava_weights_to_hf.py`` builds llava-hf:

- ``<image>`` is added to the tokenizer as a special token, and ``<pad>`` where the tokenizer has no pad token
  (Vicuna: ids 32000 / 32001); the embedding and LM-head rows grow to a multiple of 64 (32064), the new rows drawn
  from N(mean, 1e-5·cov) of the existing rows, as llava-hf's were;
- projector ``model.mm_projector.0/2`` → ``multi_modal_projector.linear_1/2``;
- ``vision_feature_layer=-2`` and ``vision_feature_select_strategy="default"`` (LLaVA-1.5's ``mm_vision_select_layer``
  and ``patch``: the CLS token is dropped), and the image-token count agrees in the processor (``patch_size``,
  ``num_additional_image_tokens``) and the config (``image_seq_length``): 576 for CLIP-L/336;
- the chat template is LLaVA-1.5's ``vicuna_v1`` conversation, starting with BOS where the tokenizer prepends one
  (Vicuna), since chat endpoints (vLLM) add no special tokens of their own;
- images are padded to a square with the mean colour before the encoder's resize and crop, as LLaVA-1.5 trains and
  evaluates (``image_aspect_ratio: pad``; transformers' ``LlavaImageProcessor(do_pad=True)``);
- weights are stored in the LLM's dtype (the vision tower and projector are cast to it, never upcast).

``convert_tinyllava`` turns a TinyLLaVA checkpoint (the XMAS / COINCIDE proxy) into the same kind of folder: it
splits the checkpoint into the three parts and assembles them with the same code. Two layouts are read, both taken
from TinyLLaVA_Factory's own code (``convert_legecy_weights_to_tinyllavafactory.py`` maps one onto the other):

- Factory (``model_type: tinyllava``): ``language_model.*``, ``vision_tower._vision_tower.*``,
  ``connector._connector.{0,2}.*``; ``text_config`` / ``vision_config`` in ``config.json``;
- legacy LLaVA-style (``bczhou/TinyLLaVA-*``): ``model.*`` / ``lm_head.*``, ``model.vision_tower.vision_tower.*``,
  ``model.mm_projector.{0,2}.*``; a flat LLM config with ``mm_*`` keys (StableLM as ``StableLMEpoch``).

Nothing is guessed: an unknown or missing key, a shape that does not fit, or a missing file is an
``AssemblyError`` that names the file and the key.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selbench.models.chat import IMAGE_TOKEN

PAD_TOKEN = "<pad>"
# LLaVA-1.5's conv_vicuna_v1 system line (llava/conversation.py).
VICUNA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the human's questions.")
EMBED_PAD_MULTIPLE = 64  # llava-hf pads the vocabulary to 32064 "for performance reasons"
NEW_ROW_COV_SCALE = 1e-5  # llava-hf: MultivariateNormal(mu, covariance_matrix=1e-5 * sigma)
FORMAT_VERSION = 1

Log = Callable[[str], None]


class AssemblyError(ValueError):
    """A component is missing, has an unknown layout, or does not fit the others."""


# ---------------------------------------------------------------------------------------------- chat template


def vicuna_v1_template(eos_token: str, system: str | None = VICUNA_V1_SYSTEM, bos_token: str | None = None) -> str:
    """LLaVA-1.5's vicuna_v1 conversation as a HF chat template:
    ``{bos}{system} USER: <image>\\n{q} ASSISTANT: {a}{eos}USER: {q2} ASSISTANT:`` (SeparatorStyle.TWO, seps " "
    and EOS). A leading ``system`` message replaces the default line; ``system=None`` drops it, which is exactly the
    embedded world's template (selbench.models.chat). Content may be a string or a list of typed parts
    (``{"type": "image"}`` / ``{"type": "text"}``), as processors and vLLM's OpenAI server pass it.

    ``bos_token``: for tokenizers that prepend BOS (Llama/Vicuna; LLaVA's prompts start with ``<s>``). Templates
    carry their BOS because template users do not add special tokens: vLLM's chat endpoint
    (``add_special_tokens=False``) and ``processor.apply_chat_template(..., tokenize=True)``. A rendered string
    passed to ``processor(text=...)`` then needs ``add_special_tokens=False``, or BOS comes twice."""
    default = json.dumps(system or "")
    eos = json.dumps(eos_token)  # a JSON string is a valid Jinja string literal: no escaping problems
    bos = f"{{{{ {json.dumps(bos_token)} }}}}" if bos_token else ""
    return (
        bos +
        "{% macro text(content) %}{% if content is string %}{{ content }}{% else %}"
        "{% for c in content %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %}{% endmacro %}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = text(messages[0]['content']) %}{% set turns = messages[1:] %}"
        f"{{% else %}}{{% set system = {default} %}}{{% set turns = messages %}}{{% endif %}}"
        "{% if system %}{{ system }} {% endif %}"
        "{% for message in turns %}"
        "{% if message['role'] == 'user' %}USER: "
        "{% if message['content'] is not string %}{% for c in message['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}{% endif %}"
        "{{ text(message['content']) }} "
        f"{{% else %}}ASSISTANT: {{{{ text(message['content']) }}}}{{{{ {eos} }}}}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


# ---------------------------------------------------------------------------------------------- checkpoints


def read_checkpoint(folder: Path) -> dict[str, tuple[torch.Tensor, str]]:
    """Every tensor of a HF-style folder: ``{key: (tensor, file name)}`` from ``*.safetensors`` (sharded or not),
    else ``pytorch_model*.bin``. The file name travels with the key so errors can say where a key came from."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise AssemblyError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
    out: dict[str, tuple[torch.Tensor, str]] = {}
    for f in files:
        for key, tensor in _read_weight_file(f).items():
            out[key] = (tensor, f.name)
    return out


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # weights_only: a .bin is a pickle; never run code from a downloaded file
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unpickling failure is the same user error
        raise AssemblyError(f"{path}: not a readable torch state dict ({e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AssemblyError(f"{path}: expected a flat {{name: tensor}} state dict")
    return state


_PROJECTOR_PREFIXES = ("model.mm_projector.", "mm_projector.", "connector._connector.", "_connector.")
_PROJECTOR_KEYS = {"0.weight": "linear_1.weight", "0.bias": "linear_1.bias",
                   "2.weight": "linear_2.weight", "2.bias": "linear_2.bias"}


def load_projector(path: str | Path) -> dict[str, torch.Tensor]:
    """The mlp2x_gelu projector of a LLaVA stage-1 ``mm_projector.bin`` (or .safetensors) with llava-hf names:
    ``model.mm_projector.{0,2}.{weight,bias}`` → ``linear_{1,2}.{weight,bias}``. TinyLLaVA's ``connector._connector``
    names are accepted too. Any other key (a deeper MLP, a linear projector) is an error."""
    path = Path(path)
    if not path.is_file():
        raise AssemblyError(f"{path}: projector file not found")
    raw = _read_weight_file(path)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        prefix = next((p for p in _PROJECTOR_PREFIXES if key.startswith(p)), None)
        rest = key[len(prefix):] if prefix else None
        if rest not in _PROJECTOR_KEYS:
            raise AssemblyError(f"{path}: unknown projector key {key!r} (expected model.mm_projector.{{0,2}}."
                                f"{{weight,bias}}: LLaVA-1.5's mlp2x_gelu)")
        out[_PROJECTOR_KEYS[rest]] = tensor
    missing = sorted(set(_PROJECTOR_KEYS.values()) - set(out))
    if missing:
        raise AssemblyError(f"{path}: projector key(s) missing: {', '.join(missing)}")
    return out


# ---------------------------------------------------------------------------------------------- components


@dataclass(frozen=True)
class _Parts:
    """Where each piece comes from. The public functions fill it; ``_assemble`` only reads it."""
    llm_dir: Path
    tokenizer_dir: Path
    vision_dir: Path
    processor_dir: Path
    projector_file: Path


_IGNORED_LLM_KEYS = re.compile(r"rotary_emb\.inv_freq$")  # old Llama checkpoints (Vicuna) saved this buffer
_IGNORED_VISION_KEYS = re.compile(r"^(text_model\.|text_projection|visual_projection|logit_scale|logit_bias)")


def _check_loading(folder: Path, what: str, info: dict, ignored: re.Pattern) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(k for k in info.get("unexpected_keys") or [] if not ignored.search(k))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        detail = "; ".join(f"{name}: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
                           for name, keys in (("missing", missing), ("unknown", unexpected),
                                              ("wrong shape", mismatched)) if keys)
        raise AssemblyError(f"{folder}: the {what} weights do not match its config.json ({detail})")


def _config_json(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise AssemblyError(f"{folder}: no config.json")
    return json.loads(path.read_text())


def _load_llm(folder: Path, dtype: torch.dtype | None):
    """The causal LM, in its own dtype unless one is asked for; every weight must come from the files."""
    from transformers import AutoModelForCausalLM

    _config_json(folder)
    try:
        lm, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or "auto", output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise AssemblyError(f"{folder}: cannot load the language model ({e})") from e
    _check_loading(folder, "language model", info, _IGNORED_LLM_KEYS)
    if not hasattr(lm, "model") or not hasattr(lm, "lm_head"):
        raise AssemblyError(f"{folder}: {type(lm).__name__} has no .model/.lm_head (expected a decoder-only causal "
                            f"LM such as LlamaForCausalLM, StableLmForCausalLM or Qwen2ForCausalLM)")
    return lm.eval()


_VISION_CLASSES = {"clip": "CLIPVisionModel", "clip_vision_model": "CLIPVisionModel",
                   "siglip": "SiglipVisionModel", "siglip_vision_model": "SiglipVisionModel"}


def _load_vision(folder: Path, dtype: torch.dtype):
    """CLIPVisionModel / SiglipVisionModel from a vision-only folder or a full CLIP / SigLIP folder (the text half
    is ignored), cast to the LLM's dtype."""
    import transformers

    model_type = _config_json(folder).get("model_type")
    if model_type not in _VISION_CLASSES:
        raise AssemblyError(f"{folder}/config.json: model_type {model_type!r} is not a supported vision encoder "
                            f"({', '.join(sorted(_VISION_CLASSES))})")
    cls = getattr(transformers, _VISION_CLASSES[model_type])
    try:
        vision, info = cls.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise AssemblyError(f"{folder}: cannot load the vision encoder ({e})") from e
    _check_loading(folder, "vision", info, _IGNORED_VISION_KEYS)
    return vision.eval()


def _vision_state(vision) -> tuple[dict[str, torch.Tensor], Any]:
    """State dict and config of the tower as LLaVA uses it: SigLIP's attention-pooling head is never used for
    patch features, so it is dropped (``vision_use_head=False``, as llava-hf's SigLIP models)."""
    config = vision.config
    state = vision.state_dict()
    if config.model_type == "siglip_vision_model":
        config = type(config).from_dict({**config.to_dict(), "vision_use_head": False})
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state, config


def _processed_side(image_processor) -> int | None:
    """The square side the image processor hands the tower (crop if it crops, else the resize target)."""
    crop = getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop is not None:
        return crop["height"] if crop["height"] == crop["width"] else None
    size = image_processor.size
    if size.get("height") and size.get("height") == size.get("width"):
        return size["height"]
    return None


_IMAGE_PROCESSOR_KEYS = ("do_convert_rgb", "do_resize", "size", "resample", "do_center_crop", "crop_size",
                         "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


def _load_image_processor(folder: Path, vision_config, pad_to_square: bool):
    """The vision encoder's own image processor; with ``pad_to_square`` the same steps behind LLaVA's
    ``expand2square`` (pad to a square with the mean colour first: ``image_aspect_ratio: pad``, which LLaVA-1.5 and
    TinyLLaVA train and evaluate with), as transformers' LlavaImageProcessor(do_pad=True) does."""
    from transformers import AutoImageProcessor, LlavaImageProcessorPil

    if not (folder / "preprocessor_config.json").is_file():
        raise AssemblyError(f"{folder}: no preprocessor_config.json (the vision encoder's image processor)")
    processor = AutoImageProcessor.from_pretrained(folder)
    if pad_to_square:
        params = {"do_center_crop": False, **processor.to_dict()}  # SigLIP's processor has no crop step
        processor = LlavaImageProcessorPil(**{k: params[k] for k in _IMAGE_PROCESSOR_KEYS if k in params},
                                           do_pad=True)
    side = _processed_side(processor)
    if side != vision_config.image_size:
        raise AssemblyError(f"{folder}/preprocessor_config.json: images come out {side} px but the vision tower "
                            f"expects {vision_config.image_size} px; the image-token count would not agree")
    return processor


def _extend_tokenizer(folder: Path):
    """Add ``<image>`` (special, never split) and, where missing, ``<pad>`` — what llava-hf did to Vicuna's
    tokenizer. Qwen-style tokenizers keep their own pad token. Left padding for batched generation."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    if not (folder / "tokenizer_config.json").is_file():
        raise AssemblyError(f"{folder}: no tokenizer_config.json (the language model's tokenizer)")
    # padding_side as a load argument: transformers saves it only when it is an init argument
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    except Exception as e:  # noqa: BLE001 — tokenizer back ends fail in many ways; all mean "cannot read it"
        hint = _sentencepiece_hint(folder)
        raise AssemblyError(f"{folder}: cannot load the tokenizer ({type(e).__name__}: {e}){hint}") from e
    added: list[str] = []
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        added.append(IMAGE_TOKEN)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        added.append(PAD_TOKEN)
    if tokenizer.eos_token is None:
        raise AssemblyError(f"{folder}: the tokenizer has no eos_token; the chat template needs one")
    return tokenizer, added


def _sentencepiece_hint(folder: Path) -> str:
    """Vicuna ships only ``tokenizer.model``; transformers converts it through sentencepiece's model proto, whose
    generated code checks the protobuf runtime version (sentencepiece 0.2.3 needs protobuf >= 7.36.1)."""
    if (folder / "tokenizer.json").is_file() or not (folder / "tokenizer.model").is_file():
        return ""
    try:
        from sentencepiece import sentencepiece_model_pb2  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return (f". This is a sentencepiece-only tokenizer and sentencepiece's model proto does not load here ({e}):"
                f" install a protobuf runtime that matches it, or add the fast tokenizer's tokenizer.json")
    return ""


def _prepended_bos(tokenizer) -> str | None:
    """The BOS string if the tokenizer puts it in front of every text by itself (Llama, Vicuna), else None."""
    ids = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    return tokenizer.bos_token if bos is not None and ids[:1] == [bos] else None


def _new_rows(rows: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n samples of N(mu, 1e-5·Σ) over ``rows`` (llava-hf's initialisation of added tokens). Drawn as
    mu + sqrt(1e-5/N)·(E − mu)ᵀz with z ~ N(0, I_N), which has exactly that covariance and needs no Cholesky
    factor (Σ is singular whenever N ≤ d, e.g. for tiny models)."""
    e = rows.float()
    mu = e.mean(0)
    z = torch.randn(n, e.shape[0], generator=generator)
    return (mu + (NEW_ROW_COV_SCALE / e.shape[0]) ** 0.5 * (z @ (e - mu))).to(rows.dtype)


def _extend_embeddings(lm, n_tokens: int, seed: int) -> tuple[dict[str, torch.Tensor], int]:
    """Input/output embedding rows for ``n_tokens`` tokens: unchanged if there are enough rows (Qwen, StableLM-2
    have spare rows), else grown to a multiple of 64 with sampled rows. Returns the replaced tensors (keyed by
    ``embed``/``head``) and the new row count."""
    embed = lm.get_input_embeddings().weight.detach()
    rows = embed.shape[0]
    if n_tokens <= rows:
        return {}, rows
    new_rows = -(-n_tokens // EMBED_PAD_MULTIPLE) * EMBED_PAD_MULTIPLE
    generator = torch.Generator().manual_seed(seed)
    out = {"embed": torch.cat([embed, _new_rows(embed, new_rows - rows, generator)])}
    if not lm.config.tie_word_embeddings:
        head = lm.lm_head.weight.detach()
        out["head"] = torch.cat([head, _new_rows(head, new_rows - rows, generator)])
    return out, new_rows


def _image_seq_length(vision_config, strategy: str) -> tuple[int, int]:
    """(tokens per image, num_additional_image_tokens): patches, plus CLIP's CLS token, minus one for "default"
    (which drops the first token — CLS for CLIP, the first patch for SigLIP, as LLaVA and TinyLLaVA do)."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    extra = 1 if vision_config.model_type == "clip_vision_model" else 0
    return patches + extra - (1 if strategy == "default" else 0), extra


# ---------------------------------------------------------------------------------------------- assembly


def assemble_llava(llm_dir: str | Path, vision_dir: str | Path, projector_file: str | Path, out_dir: str | Path, *,
                   vision_feature_layer: int = -2, vision_feature_select_strategy: str = "default",
                   pad_to_square: bool = True, system_prompt: str | None = VICUNA_V1_SYSTEM,
                   dtype: str | None = None, seed: int = 0, overwrite: bool = False, log: Log | None = None) -> Path:
    """Assemble a ``LlavaForConditionalGeneration`` folder (config, safetensors, tokenizer, processor, chat
    template, ``assembly.json``) from a HF causal-LM folder, a HF vision folder (CLIPVisionModel / CLIPModel /
    SiglipVisionModel / SiglipModel) and a projector file. ``pad_to_square``: pad images to a square with the
    mean colour before the encoder's resize/crop (LLaVA-1.5's ``image_aspect_ratio: pad``). ``dtype`` (e.g.
    "bfloat16") overrides the LLM's own dtype, which is the default for every weight. Same inputs and seed → same
    weights. Returns ``out_dir``."""
    parts = _Parts(Path(llm_dir), Path(llm_dir), Path(vision_dir), Path(vision_dir), Path(projector_file))
    return _assemble(parts, Path(out_dir), kind="assemble", vision_feature_layer=vision_feature_layer,
                     vision_feature_select_strategy=vision_feature_select_strategy, pad_to_square=pad_to_square,
                     system_prompt=system_prompt, dtype=dtype, seed=seed, overwrite=overwrite,
                     log=log or (lambda m: None))


def _assemble(parts: _Parts, out_dir: Path, *, kind: str, vision_feature_layer: int,
              vision_feature_select_strategy: str, pad_to_square: bool, system_prompt: str | None,
              dtype: str | None, seed: int, overwrite: bool, log: Log, sources: dict[str, str] | None = None,
              extra: dict | None = None) -> Path:
    from transformers import LlavaProcessor

    if vision_feature_select_strategy not in ("default", "full"):
        raise AssemblyError(f"vision_feature_select_strategy must be 'default' or 'full', not "
                            f"{vision_feature_select_strategy!r}")
    _check_out_dir(out_dir, overwrite)
    log(f"language model: {parts.llm_dir}")
    lm = _load_llm(parts.llm_dir, _torch_dtype(dtype))
    log(f"vision tower: {parts.vision_dir} (cast to {lm.dtype})")
    vision_state, vision_config = _vision_state(_load_vision(parts.vision_dir, lm.dtype))
    if not -vision_config.num_hidden_layers - 1 <= vision_feature_layer <= vision_config.num_hidden_layers:
        raise AssemblyError(f"vision_feature_layer {vision_feature_layer} is outside the "
                            f"{vision_config.num_hidden_layers}-layer vision tower of {parts.vision_dir}")
    projector = _fit_projector(load_projector(parts.projector_file), parts.projector_file,
                               vision_config.hidden_size, lm.config.hidden_size, lm.dtype)
    tokenizer, added = _extend_tokenizer(parts.tokenizer_dir)
    image_processor = _load_image_processor(parts.processor_dir, vision_config, pad_to_square)
    old_rows = lm.get_input_embeddings().weight.shape[0]
    grown, rows = _extend_embeddings(lm, len(tokenizer), seed)
    n_image, n_additional = _image_seq_length(vision_config, vision_feature_select_strategy)
    llava = _build_llava(lm, grown, rows, vision_state, vision_config, projector, tokenizer, n_image,
                         vision_feature_layer, vision_feature_select_strategy)
    llava.generation_config = _generation_config(parts.llm_dir, lm.config, tokenizer)

    template = vicuna_v1_template(tokenizer.eos_token, system_prompt, bos_token=_prepended_bos(tokenizer))
    tokenizer.chat_template = template
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=vision_feature_select_strategy,
                               num_additional_image_tokens=n_additional, image_token=IMAGE_TOKEN,
                               chat_template=template)
    record = {
        "format": FORMAT_VERSION, "kind": kind,
        "sources": sources or {k: str(v.resolve()) for k, v in _sources(parts).items()},
        "dtype": str(lm.dtype).removeprefix("torch."), "added_tokens": added,
        "image_token_id": llava.config.image_token_id, "pad_token_id": tokenizer.pad_token_id,
        "vocab_rows": [old_rows, rows], "image_seq_length": n_image, "vision_feature_layer": vision_feature_layer,
        "vision_feature_select_strategy": vision_feature_select_strategy, "pad_to_square": pad_to_square,
        "system_prompt": system_prompt, "seed": seed, **(extra or {}),
    }
    log(f"writing {out_dir} ({lm.dtype}, vocabulary {old_rows} → {rows} rows, {n_image} image tokens)")
    return _write(out_dir, llava, processor, record)


def _build_llava(lm, grown: dict[str, torch.Tensor], rows: int, vision_state: dict[str, torch.Tensor], vision_config,
                 projector: dict[str, torch.Tensor], tokenizer, n_image: int, vision_feature_layer: int,
                 vision_feature_select_strategy: str):
    """The LLaVA model holding the parts' tensors. Built on the meta device and filled by assignment: no random
    initialisation of 7B parameters, and strict loading proves every parameter got a tensor from one of the parts."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    text_config = lm.config
    text_config.vocab_size = rows
    text_config.pad_token_id = tokenizer.pad_token_id
    tied = text_config.tie_word_embeddings
    config = LlavaConfig(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(),
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=n_image,
                         vision_feature_layer=vision_feature_layer,
                         vision_feature_select_strategy=vision_feature_select_strategy,
                         projector_hidden_act="gelu", multimodal_projector_bias=True, tie_word_embeddings=tied,
                         pad_token_id=tokenizer.pad_token_id, dtype=lm.dtype)
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    lm_state = lm.model.state_dict()
    if "embed" in grown:
        lm_state[_embed_key(lm)] = grown["embed"]
    llava.model.language_model.load_state_dict(lm_state, strict=True, assign=True)
    if not tied:
        llava.lm_head.load_state_dict({"weight": grown.get("head", lm.lm_head.weight.detach())},
                                      strict=True, assign=True)
    llava.model.vision_tower.load_state_dict(vision_state, strict=True, assign=True)
    llava.model.multi_modal_projector.load_state_dict(projector, strict=True, assign=True)
    if tied:
        llava.tie_weights()
    left = [n for n, p in llava.named_parameters() if p.device.type == "meta"]
    if left:
        raise AssemblyError(f"parameters without weights after assembly: {', '.join(left[:8])}")
    return llava


def _generation_config(llm_dir: Path, text_config, tokenizer):
    """The LLM's own generation defaults (EOS, BOS), with the pad token the tokenizer now has."""
    from transformers import GenerationConfig

    generation = (GenerationConfig.from_pretrained(llm_dir) if (llm_dir / "generation_config.json").is_file()
                  else GenerationConfig.from_model_config(text_config))
    generation.pad_token_id = tokenizer.pad_token_id
    return generation


def _write(out_dir: Path, llava, processor, record: dict) -> Path:
    """Written next to ``out_dir`` and renamed into place: a folder that exists is complete."""
    stage = out_dir.with_name(out_dir.name + ".partial")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        llava.save_pretrained(stage)
        processor.save_pretrained(stage)
        (stage / "assembly.json").write_text(json.dumps(record, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    stage.rename(out_dir)
    return out_dir


def _sources(parts: _Parts) -> dict[str, Path]:
    return {"llm": parts.llm_dir, "tokenizer": parts.tokenizer_dir, "vision": parts.vision_dir,
            "image_processor": parts.processor_dir, "projector": parts.projector_file}


def _torch_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise AssemblyError(f"dtype {name!r} is not a torch floating dtype (bfloat16, float16, float32)")
    return value


def _embed_key(lm) -> str:
    embed = lm.get_input_embeddings()
    for name, module in lm.model.named_modules():
        if module is embed:
            return f"{name}.weight"
    raise AssemblyError(f"{type(lm).__name__}: input embeddings are not part of .model")


def _fit_projector(projector: dict[str, torch.Tensor], path: Path, vision_hidden: int, text_hidden: int,
                   dtype: torch.dtype) -> dict[str, torch.Tensor]:
    expected = {"linear_1.weight": (text_hidden, vision_hidden), "linear_1.bias": (text_hidden,),
                "linear_2.weight": (text_hidden, text_hidden), "linear_2.bias": (text_hidden,)}
    for name, shape in expected.items():
        if tuple(projector[name].shape) != shape:
            raise AssemblyError(f"{path}: projector {name} has shape {tuple(projector[name].shape)}, the vision "
                                f"tower (hidden {vision_hidden}) and LLM (hidden {text_hidden}) need {shape}: "
                                f"was it trained for these two models?")
    return {k: v.to(dtype) for k, v in projector.items()}


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise AssemblyError(f"{out_dir} exists and is not empty (pass overwrite=True to replace it)")


# ---------------------------------------------------------------------------------------------- TinyLLaVA


_FACTORY_STRATEGY = {"patch": "default", "cls_patch": "full"}  # TinyLLaVA / LLaVA name → HF LLaVA name
_LEGACY_LLMS = {"TinyLlavaStablelmForCausalLM": "stablelm", "TinyLlavaLlamaForCausalLM": "llama"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "added_tokens.json", "tokenization_arcade100k.py",
                    "arcade100k.tiktoken")


def convert_tinyllava(src_dir: str | Path, out_dir: str | Path, *, llm_dir: str | Path | None = None,
                      vision_dir: str | Path | None = None, system_prompt: str | None = VICUNA_V1_SYSTEM,
                      seed: int = 0, overwrite: bool = False, log: Log | None = None) -> Path:
    """Convert a TinyLLaVA checkpoint folder (Factory or legacy layout, detected from ``config.json``) into a
    ``LlavaForConditionalGeneration`` folder, as ``assemble_llava`` writes them.

    ``llm_dir``: where the tokenizer comes from when ``src_dir`` has none (the released LLM, e.g.
    stablelm-2-zephyr-1_6b). ``vision_dir``: the released vision encoder (e.g. clip-vit-large-patch14-336), needed
    for the image processor when ``src_dir`` has no ``preprocessor_config.json``, and by the legacy layout for the
    tower's config (and its weights, when the checkpoint does not carry them)."""
    src = Path(src_dir)
    config = _config_json(src)
    log = log or (lambda m: None)
    with tempfile.TemporaryDirectory(prefix=".tinyllava-parts-", dir=_existing_parent(Path(out_dir))) as tmp:
        try:
            return _convert(src, config, Path(out_dir), Path(tmp), llm_dir, vision_dir, system_prompt, seed,
                            overwrite, log)
        except AssemblyError as e:  # a part split off into tmp is named by the checkpoint it came from
            raise AssemblyError(str(e).replace(tmp, f"{src} (split part)")) from e


def _convert(src: Path, config: dict, out_dir: Path, tmp: Path, llm_dir, vision_dir, system_prompt: str | None,
             seed: int, overwrite: bool, log: Log) -> Path:
    if config.get("model_type") == "tinyllava":
        parts, layer, strategy = _split_factory(src, config, tmp, llm_dir, vision_dir)
        layout = "tinyllava-factory"
    elif "mm_vision_tower" in config:
        parts, layer, strategy = _split_legacy(src, config, tmp, llm_dir, vision_dir)
        layout = "tinyllava-legacy"
    else:
        raise AssemblyError(f"{src}/config.json: neither a TinyLLaVA_Factory checkpoint (model_type 'tinyllava') "
                            f"nor a legacy LLaVA-style one (mm_vision_tower); model_type is "
                            f"{config.get('model_type')!r}")
    aspect = config.get("image_aspect_ratio", "square")  # LLaVA's code base: absent means no padding
    if aspect not in ("pad", "square"):
        raise AssemblyError(f"{src}/config.json: image_aspect_ratio {aspect!r} is not 'pad' or 'square' "
                            f"(LLaVA's flat-image layouts)")
    log(f"{src}: {layout} layout")
    # assembly.json names the user's folders, not the scratch copies split off into tmp
    origin = {name: str((src if tmp in path.parents else path).resolve()) for name, path in _sources(parts).items()}
    return _assemble(parts, out_dir, kind="convert-tinyllava", vision_feature_layer=layer,
                     vision_feature_select_strategy=strategy, pad_to_square=aspect == "pad",
                     system_prompt=system_prompt, dtype=None, seed=seed,
                     overwrite=overwrite, log=log, sources=origin, extra={"tinyllava_layout": layout})


def _existing_parent(path: Path) -> Path:
    parent = path.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _split_factory(src: Path, config: dict, tmp: Path, llm_dir, vision_dir) -> tuple[_Parts, int, str]:
    """TinyLLaVA_Factory: ``language_model.*`` is the whole HF causal LM, ``vision_tower._vision_tower.*`` the whole
    CLIP/SigLIP vision model, ``connector._connector.*`` the MLP (TinyLlavaForConditionalGeneration)."""
    connector = config.get("connector_type")
    if connector != "mlp2x_gelu":
        raise AssemblyError(f"{src}/config.json: connector_type {connector!r} is not mlp2x_gelu (LLaVA's projector)")
    strategy = _strategy(src, config.get("vision_feature_select_strategy", "patch"))
    for key in ("text_config", "vision_config"):
        if not isinstance(config.get(key), dict):
            raise AssemblyError(f"{src}/config.json: no {key}")
    groups = _group(src, read_checkpoint(src), {"language_model.": "llm", "vision_tower._vision_tower.": "vision",
                                                "connector._connector.": "projector"})
    if not groups["llm"] or not groups["projector"]:
        raise AssemblyError(f"{src}: no language_model.* or connector._connector.* weights")
    llm = _write_part(tmp / "llm", config["text_config"], groups["llm"])
    vision_config = dict(config["vision_config"])
    vision_config.setdefault("model_type", "clip_vision_model")
    if groups["vision"]:
        vision = _write_part(tmp / "vision", vision_config, groups["vision"])
    else:  # frozen towers may be left out of a checkpoint: take the released encoder's weights
        vision = _require(vision_dir, src, "has no vision_tower._vision_tower.* weights: pass vision_dir")
    projector = tmp / "projector.safetensors"
    _save(projector, {f"connector._connector.{k}": v for k, v in groups["projector"].items()})
    parts = _Parts(llm, _tokenizer_source(src, llm_dir), vision, _processor_source(src, vision_dir), projector)
    return parts, int(config.get("vision_feature_layer", -2)), strategy


def _split_legacy(src: Path, config: dict, tmp: Path, llm_dir, vision_dir) -> tuple[_Parts, int, str]:
    """bczhou/TinyLLaVA (LLaVA's code base): the LLM's own ``model.*`` / ``lm_head.*`` keys next to
    ``model.vision_tower.vision_tower.*`` and ``model.mm_projector.*``, one flat config. Its SigLIP tower drops the
    encoder's last layer and the pooling head and feeds all 729 patch states of the (new) last layer to the
    projector (``SigLipVisionTower``): in HF terms a 26-layer tower, layer -1, strategy "full"."""
    arch = (config.get("architectures") or [None])[0]
    if arch not in _LEGACY_LLMS:
        raise AssemblyError(f"{src}/config.json: architecture {arch!r} is not supported (known: "
                            f"{', '.join(sorted(_LEGACY_LLMS))}; TinyLLaVA's Phi uses its own Phi code)")
    if config.get("mm_projector_type") != "mlp2x_gelu":
        raise AssemblyError(f"{src}/config.json: mm_projector_type {config.get('mm_projector_type')!r} is not "
                            f"mlp2x_gelu")
    for key, plain in (("mm_use_im_start_end", False), ("mm_use_im_patch_token", False),
                       ("mm_patch_merge_type", "flat")):
        if config.get(key, plain) != plain:  # extra image tokens / newline embeddings: not LLaVA-1.5's layout
            raise AssemblyError(f"{src}/config.json: {key} = {config[key]!r} is not supported (expected {plain!r})")
    groups = _group(src, read_checkpoint(src), {"model.vision_tower.vision_tower.": "vision",
                                                "model.mm_projector.": "projector", "model.": "llm",
                                                "lm_head.": "llm"}, keep_prefix=frozenset({"model.", "lm_head."}))
    if not groups["projector"]:
        raise AssemblyError(f"{src}: no model.mm_projector.* weights")
    llm = _write_part(tmp / "llm", _legacy_text_config(src, config, _LEGACY_LLMS[arch]), groups["llm"])
    released = _require(vision_dir, src, "is a legacy TinyLLaVA checkpoint: pass vision_dir (the released vision "
                                         "encoder: its config and image processor are not in the checkpoint)")
    vision_config = _vision_config_of(released)
    siglip = "siglip" in str(config["mm_vision_tower"]).lower()
    if siglip:
        layers = vision_config["num_hidden_layers"] - 1
        vision_config = {**vision_config, "num_hidden_layers": layers, "vision_use_head": False}
        layer, strategy = -1, "full"
    else:
        layer = int(config.get("mm_vision_select_layer", -2))
        strategy = _strategy(src, config.get("mm_vision_select_feature", "patch"))
    vision_weights = groups["vision"] or _released_vision_weights(released)
    if siglip:  # the tower TinyLLaVA ran: no last layer, no head
        vision_weights = {k: v for k, v in vision_weights.items()
                          if ".head." not in f".{k}" and not _layer_at_least(k, vision_config["num_hidden_layers"])}
    vision = _write_part(tmp / "vision", vision_config, vision_weights)
    mm_hidden = config.get("mm_hidden_size")
    if mm_hidden is not None and mm_hidden != vision_config.get("hidden_size"):
        raise AssemblyError(f"{src}/config.json: mm_hidden_size {mm_hidden} but {released} has hidden_size "
                            f"{vision_config.get('hidden_size')}: not the vision encoder this model was trained with")
    projector = tmp / "projector.safetensors"
    _save(projector, {f"model.mm_projector.{k}": v for k, v in groups["projector"].items()})
    parts = _Parts(llm, _tokenizer_source(src, llm_dir), vision, _processor_source(src, released), projector)
    return parts, layer, strategy


def _released_vision_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The vision half of a released encoder folder, keyed as released (``vision_model.*``); a vision-only folder
    written by transformers 5 has the same keys without the prefix."""
    tensors = {k: v for k, (v, _) in read_checkpoint(folder).items() if not _IGNORED_VISION_KEYS.search(k)}
    if any(k.startswith("vision_model.") for k in tensors):
        return {k: v for k, v in tensors.items() if k.startswith("vision_model.")}
    return {f"vision_model.{k}": v for k, v in tensors.items()}


def _strategy(src: Path, name: str) -> str:
    if name not in _FACTORY_STRATEGY:
        raise AssemblyError(f"{src}/config.json: vision feature selection {name!r} is not 'patch' or 'cls_patch'")
    return _FACTORY_STRATEGY[name]


def _layer_at_least(key: str, n: int) -> bool:
    m = re.search(r"encoder\.layers\.(\d+)\.", key)
    return m is not None and int(m.group(1)) >= n


def _group(src: Path, tensors: dict[str, tuple[torch.Tensor, str]], prefixes: dict[str, str],
           keep_prefix: frozenset[str] = frozenset()) -> dict[str, dict[str, torch.Tensor]]:
    """Split checkpoint keys by their first matching prefix (dict order: longest first); an unmatched key is an
    error naming its file. Prefixes in ``keep_prefix`` stay on the key (the LLM's own ``model.``/``lm_head.``)."""
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in prefixes.values()}
    for key, (tensor, file) in tensors.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise AssemblyError(f"{src / file}: unknown key {key!r} (expected one of "
                                f"{', '.join(p + '*' for p in prefixes)})")
        groups[prefixes[prefix]][key if prefix in keep_prefix else key[len(prefix):]] = tensor
    return groups


def _write_part(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """A component folder as it is released (config.json + model.safetensors), so the same loaders (and their
    key checks) read it as they read the real parts."""
    folder.mkdir(parents=True)
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    config = dict(config)
    if len(dtypes) == 1:  # the checkpoint's own dtype, so loading with dtype="auto" never upcasts
        config["dtype"] = str(dtypes.pop()).removeprefix("torch.")
        config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _save(folder / "model.safetensors", tensors)
    return folder


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    # Tied or shared tensors would make save_file refuse: every entry gets its own contiguous storage.
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _legacy_text_config(src: Path, config: dict, kind: str) -> dict:
    """The LLM half of a legacy flat config as a stock transformers config. StableLM was TinyLLaVA's copy of
    StableLMEpoch (rope_pct, norm_eps), whose module names equal transformers' StableLm."""
    common = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rope_theta",
              "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_dropout")
    out = {k: config[k] for k in common if k in config}
    if kind == "stablelm":
        for key in ("rope_pct", "norm_eps"):
            if key not in config:
                raise AssemblyError(f"{src}/config.json: StableLM (StableLMEpoch) config without {key!r}")
        out.update(model_type="stablelm", architectures=["StableLmForCausalLM"],
                   partial_rotary_factor=config["rope_pct"], layer_norm_eps=config["norm_eps"],
                   use_qkv_bias=config.get("use_qkv_bias", True), qk_layernorm=False, use_parallel_residual=False)
    else:
        out.update(model_type="llama", architectures=["LlamaForCausalLM"],
                   rms_norm_eps=config.get("rms_norm_eps", 1e-6))
    if "torch_dtype" in config:
        out["torch_dtype"] = config["torch_dtype"]
    return out


def _vision_config_of(folder: Path) -> dict:
    config = _config_json(folder)
    if config.get("model_type") in ("clip", "siglip"):  # full CLIP/SigLIP: the vision half
        config = {**config["vision_config"], "model_type": f"{config['model_type']}_vision_model"}
    if config.get("model_type") not in ("clip_vision_model", "siglip_vision_model"):
        raise AssemblyError(f"{folder}/config.json: model_type {config.get('model_type')!r} is not a CLIP or "
                            f"SigLIP vision encoder")
    return config


def _require(path: str | Path | None, src: Path, why: str) -> Path:
    if path is None:
        raise AssemblyError(f"{src} {why}")
    return Path(path)


def _tokenizer_source(src: Path, llm_dir) -> Path:
    if (src / "tokenizer_config.json").is_file():
        return src
    return _require(llm_dir, src, "has no tokenizer: pass llm_dir (the released language model's folder)")


def _processor_source(src: Path, vision_dir) -> Path:
    if (src / "preprocessor_config.json").is_file():
        return src
    return _require(vision_dir, src, "has no preprocessor_config.json: pass vision_dir (the released vision "
                                     "encoder's folder)")

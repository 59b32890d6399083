"""The checkpoint export for vLLM (selbench.evaluators.vllm_server.export_for_vllm): the vision tower's tensors get
vLLM's names, and weight files with nothing to rename are hard-linked, not copied — a 7B checkpoint's LLM shards are
not duplicated per evaluation job."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from selbench.evaluators.vllm_server import export_for_vllm


def _keys(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as fh:
        return set(fh.keys())


def test_only_the_shard_with_vision_weights_is_rewritten(tmp_path: Path) -> None:
    ckpt = tmp_path / "model"
    ckpt.mkdir()
    llm = "model-00001-of-00002.safetensors"
    vision = "model-00002-of-00002.safetensors"
    save_file({"model.language_model.layers.0.mlp.up_proj.weight": torch.ones(4, 4)}, str(ckpt / llm))
    save_file({"vision_tower.encoder.layers.0.mlp.fc1.weight": torch.full((2, 2), 3.0),
               "model.multi_modal_projector.linear_1.weight": torch.zeros(2, 2)}, str(ckpt / vision))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    (ckpt / "config.json").write_text("{}")

    out = export_for_vllm(ckpt, tmp_path / "vllm-model")
    assert (out / llm).stat().st_ino == (ckpt / llm).stat().st_ino  # linked: no copy of the LLM's shard
    assert (out / vision).stat().st_ino != (ckpt / vision).stat().st_ino
    assert _keys(out / vision) == {"vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
                                   "model.multi_modal_projector.linear_1.weight"}
    with safe_open(str(out / vision), "pt") as fh:
        assert torch.equal(fh.get_tensor("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
                           torch.full((2, 2), 3.0))
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert index == {"model.language_model.layers.0.mlp.up_proj.weight": llm,
                     "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight": vision,
                     "model.multi_modal_projector.linear_1.weight": vision}
    assert (out / "config.json").read_text() == "{}"
    assert _keys(ckpt / vision) == {"vision_tower.encoder.layers.0.mlp.fc1.weight",
                                    "model.multi_modal_projector.linear_1.weight"}  # the checkpoint is untouched

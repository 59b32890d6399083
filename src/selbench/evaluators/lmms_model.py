"""The HF backend as an lmms-eval model (``--model selbench_hf``), registered through lmms-eval's entry-point group
``lmms_eval.models`` (pyproject). It generates with the same code as fine-tuning's chat template and the direct
backend (selbench.models.generate), greedy, so lmms-eval's scores are comparable with every other backend's.

An item whose prompt does not fit the model's context (``max_position_embeddings``) is not generated: it answers ""
(scored by its task as an empty answer) and is recorded in ``over_context`` — as the vLLM server rejects it — so
the session counts it against the benchmark's threshold instead of the whole benchmark failing or the model running
past its positions.

Only ``generate_until`` is served: every embedded task is generative (lmms-eval 0.7.3's loglikelihood path is broken
for multimodal models), and a task asking for log-likelihoods gets a clear error.
"""

from __future__ import annotations

import io
from collections import defaultdict

from lmms_eval.api.model import lmms

MODEL_ID = "selbench_hf"


def manifests() -> list:
    # Imported here, not at the top: lmms_eval.models loads this entry point while it initialises.
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path="selbench.evaluators.lmms_model.SelbenchHF")]


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # lossless: the pixels the direct backend sees
    return buf.getvalue()


class SelbenchHF(lmms):
    is_simple = True

    def __init__(self, pretrained: str, batch_size: int | str = 64, device: str | None = None,
                 max_batch_size: int | None = None, **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"selbench_hf: unknown model_args {sorted(kwargs)} (known: pretrained; --batch_size)")
        if device not in (None, "cpu") and not str(device).startswith("cuda"):
            raise ValueError(f"selbench_hf: unsupported device {device!r}")
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.model = LlavaForConditionalGeneration.from_pretrained(pretrained, dtype=torch.float32).eval()
        if device and str(device).startswith("cuda") and torch.cuda.is_available():
            self.model = self.model.to(device)
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.batch_size = int(batch_size)
        text = getattr(self.model.config, "text_config", self.model.config)
        self.context = int(text.max_position_embeddings)
        self.over_context: list[str] = []  # "doc N: T prompt tokens" per item; the session hands in its own list

    def generate_until(self, requests) -> list[str]:
        from selbench.models.generate import generate_answers, prompt_lengths

        # One generate call per distinct max_new_tokens, in request order (what the direct backend batches).
        groups: dict[int, list[int]] = defaultdict(list)
        for k, req in enumerate(requests):
            groups[int(req.args[1].get("max_new_tokens", 16))].append(k)
        out: list[str] = [""] * len(requests)
        for max_new, idx in groups.items():
            items = []
            for k in idx:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = requests[k].args
                if gen_kwargs.get("do_sample"):  # without do_sample a temperature changes nothing (HF semantics)
                    raise ValueError(f"task {task}: selbench_hf decodes greedily; the task asks for sampling")
                visuals = doc_to_visual(self.task_dict[task][split][doc_id])
                if len(visuals) > 1:
                    raise ValueError(f"task {task} doc {doc_id}: {len(visuals)} images; the tiny VLM takes one")
                items.append((context, _png(visuals[0]) if visuals else None))
            n_image = int(self.model.config.image_seq_length)
            fits = []
            for k, item, length in zip(idx, items, prompt_lengths(self.processor, n_image, items)):
                if length >= self.context:  # no room for one generated token
                    self.over_context.append(f"doc {requests[k].args[3]}: {length} prompt tokens")
                else:
                    fits.append((k, item))
            answers = generate_answers(self.model, self.processor, n_image, [item for _, item in fits],
                                       batch_size=self.batch_size, max_new_tokens=max_new)
            for (k, _), answer in zip(fits, answers):
                for stop in requests[k].args[1].get("until") or []:
                    answer = answer.split(stop)[0] if stop else answer
                out[k] = answer
        return out

    def clean(self) -> None:
        """lmms-eval calls this after every simple_evaluate and would delete the model; one session evaluates
        several benchmarks with it, so it stays until the session ends."""

    def loglikelihood(self, requests):
        raise NotImplementedError("selbench_hf serves generate_until only; make the task generative "
                                  "(output_type: generate_until)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("selbench_hf does not serve multi-round generation")

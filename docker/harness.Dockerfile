# SelBench harness image: selbench + the locked Python stack (requirements/lock.txt: transformers, peft, accelerate,
# faiss, lmms-eval, …) + torch. Every stage of a run (score, select, fine-tune, evaluate) runs in it under the
# Docker executor: `python -m selbench.harness.job STORE JOB` (docs/containers.md).
#
# The base image is a build argument so the same file builds
#   - for GPUs:  BASE_IMAGE=python:3.11-slim-bookworm (default; torch's CUDA wheels bring the CUDA runtime, the
#                NVIDIA container runtime brings the driver), TORCH_INSTALL="torch==2.13.0 deepspeed==0.18.2",
#                FAISS_INSTALL="-r /src/requirements/faiss-gpu.txt": faiss-gpu (k-means on the GPU, as COINCIDE and
#                XMAS ran it) INSTEAD of the lock's faiss-cpu — both ship the `faiss` module; the build then checks
#                that the installed faiss has GPU support compiled in (no GPU is needed to build)
#   - here/CI:   BASE_IMAGE=selbench-base:bookworm (debootstrap'd Debian imported into dockerd; no registry) with
#                the CPU torch wheel in the build context's wheels/ (selbench image build does both); FAISS_INSTALL
#                empty (default): the lock's faiss-cpu.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INSTALL="torch==2.13.0"
ARG FAISS_INSTALL=""
ARG PIP_ARGS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    SELBENCH_NO_PROGRESS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PATH=/opt/selbench/bin:$PATH
COPY wheels/ /wheels/
COPY certs/ /certs/
COPY requirements/ /src/requirements/
# torch first (from wheels/ when it holds one), then the lock without dependency resolution, as the Makefile does
# (with FAISS_INSTALL: the lock less faiss-cpu, plus FAISS_INSTALL's pins, also --no-deps).
# certs/ca.crt, when the build context has one, is the CA bundle for a TLS-intercepting proxy (build time only).
RUN python3 -m venv /opt/selbench \
 && if [ -s /certs/ca.crt ]; then export PIP_CERT=/certs/ca.crt; fi \
 && pip install -q --find-links /wheels $PIP_ARGS $TORCH_INSTALL \
 && if [ -z "$FAISS_INSTALL" ]; then pip install -q --no-deps $PIP_ARGS -r /src/requirements/lock.txt; \
    else grep -v '^faiss-cpu==' /src/requirements/lock.txt >/tmp/lock-gpu-faiss.txt \
      && pip install -q --no-deps $PIP_ARGS -r /tmp/lock-gpu-faiss.txt $FAISS_INSTALL \
      && rm /tmp/lock-gpu-faiss.txt; fi \
 && rm -rf /wheels /certs
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN pip install -q --no-deps --no-build-isolation /src \
 && python -c "import selbench, torch, transformers, faiss; print('selbench', selbench.__version__, 'torch', torch.__version__)" \
 && if [ -n "$FAISS_INSTALL" ]; then python -c "import faiss, importlib.metadata as md; \
assert hasattr(faiss, 'StandardGpuResources'), 'FAISS_INSTALL gave a faiss without GPU support'; \
assert 'faiss-cpu' not in {d.metadata['Name'] for d in md.distributions()}, 'faiss-cpu is installed too'; \
print('faiss', faiss.__version__, 'with GPU support;', faiss.get_num_gpus(), 'GPUs visible at build time')"; fi
WORKDIR /work

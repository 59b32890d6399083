"""faiss k-means for COINCIDE and XMAS, on the GPU when one is visible (as both papers ran it), else on the CPU.

Both devices run the same ``faiss.Kmeans`` with the same parameters and seed: the seed fixes the subsample and the
initial centroids (drawn on the CPU either way); only the nearest-centroid search of each iteration moves to the GPU
(``GpuIndexFlatIP`` / ``GpuIndexFlatL2``; the centroid update stays on the CPU). The search sums floats in another
order than the CPU's BLAS, so a point almost equidistant from two centroids can be assigned differently, and from
then on the iterations diverge: labels, and whatever is computed from them, may differ between GPU and CPU runs
(docs/performance.md, "k-means: GPU or CPU"). ``SELBENCH_KMEANS=cpu`` forces the CPU for a bit-exact comparison.

The device is not part of any job's config (job ids stay as they are); the selectors say in their notes which one
clustered (``kmeans_note``).

Memory: float16 features (COINCIDE's, stored and memory-mapped) are never copied to one float32 array, which at
LLaVA-665K size would be N × D × 4 bytes (54 GB for TinyLLaVA's 20,480-dim features). faiss trains on them as fp16
codes (``Clustering.train_encoded`` with an fp16 scalar-quantizer codec, decoding rows as it needs them) and the final
assignment reads them in blocks. fp16 → float32 decoding is exact, the blocks are multiples of faiss's own 4,096-query
BLAS block, and every block takes the kernel one search over all rows would take (faiss picks BLAS by rows × d: a
short last block would otherwise take its other kernel), so on the CPU centroids and labels are bit for bit those of
``Kmeans.train`` on the float32 copy (tested; on the GPU faiss cuts the queries its own way: not shown equal).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

ENV = "SELBENCH_KMEANS"  # auto (default): the GPU when one is visible and faiss has GPU support; cpu; gpu (or fail)
Device = Literal["cpu", "gpu"]
SEARCH_BLOCK = 32_768  # rows decoded per assignment search: faiss's decode block, a multiple of its 4,096-query block


def faiss_has_gpu(faiss: Any) -> bool:
    """Whether this faiss build has GPU support compiled in (faiss-gpu) — not whether a GPU is visible."""
    return hasattr(faiss, "StandardGpuResources")


def visible_gpus(faiss: Any) -> int:
    """GPUs faiss can use here: 0 for a CPU-only build, else what CUDA reports (``CUDA_VISIBLE_DEVICES``)."""
    return int(faiss.get_num_gpus()) if faiss_has_gpu(faiss) else 0


def kmeans_device() -> Device:
    """Where k-means runs: ``SELBENCH_KMEANS`` = ``auto`` (default) picks the GPU when faiss has GPU support and
    sees a GPU, the CPU otherwise; ``cpu`` always the CPU; ``gpu`` the GPU or an error."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "cpu", "gpu"):
        raise ValueError(f"{ENV}={choice!r}: expected auto, cpu or gpu")
    if choice == "cpu":
        return "cpu"
    import faiss

    if visible_gpus(faiss) > 0:
        return "gpu"
    if choice == "gpu":
        why = "sees no GPU" if faiss_has_gpu(faiss) else "has no GPU support (faiss-cpu; the GPU image has faiss-gpu)"
        raise RuntimeError(f"{ENV}=gpu but faiss {faiss.__version__} {why}")
    return "cpu"


def kmeans_note(device: Device | None = None) -> str:
    """For a job's notes: which device clustered, and with which faiss."""
    import faiss

    device = device or kmeans_device()
    forced = f"; {ENV}={os.environ[ENV]}" if os.environ.get(ENV, "").strip() else ""
    return f"k-means on {device} (faiss {faiss.__version__}{forced})"


def faiss_kmeans(x: np.ndarray, k: int, *, niter: int, seed: int, device: Device | None = None,
                 **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """``faiss.Kmeans(d, k, niter=, seed=, verbose=False, **params)`` trained on ``x``, then every row assigned to
    its nearest centroid → (centroids [k, d] float32, labels [N] int64). ``device`` None: ``kmeans_device()``.

    On the GPU, Kmeans' own flat index (inner product when spherical, L2 otherwise) is moved to one device, the first
    visible: the job's GPU, and results that do not depend on how many GPUs the job holds. (``Kmeans(gpu=...)``
    would take every visible GPU: its ``gpu=1`` means ``True``.)"""
    import faiss

    device = device or kmeans_device()
    n, d = x.shape
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, verbose=False, **params)
    if device == "gpu":
        resources = faiss.StandardGpuResources()  # referenced until the search below is done
        km.index = faiss.index_cpu_to_gpu(resources, 0, km.index)
    if x.dtype != np.float16:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        km.train(x32)
        _, labels = km.index.search(x32, 1)  # the index holds the final centroids (on the GPU when it ran there)
        return km.centroids, labels[:, 0].astype(np.int64)
    # float16 (memory-mapped features): train on the codes, decoded as faiss goes; no N × D float32 copy
    _check_finite(x)  # faiss checks only float32 input; a NaN among codes aborts the process inside OpenMP
    km.cp.decode_block_size = SEARCH_BLOCK
    with _one_call_kernel(faiss, n, d):
        clus = faiss.Clustering(d, k, km.cp)
        clus.train_encoded(np.ascontiguousarray(x).view(np.uint8),  # a view of the mapped file, not a copy
                           faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16), km.index)
    _, labels = search_blocks(km.index, x)
    return faiss.vector_float_to_array(clus.centroids).reshape(k, d), labels.astype(np.int64)


def search_blocks(index: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, 1)`` for float16 rows decoded ``SEARCH_BLOCK`` at a time: the distances and labels of one
    search over the float32 copy, bit for bit (on the CPU) → (distances [N], labels [N])."""
    import faiss

    n, d = x.shape
    with _one_call_kernel(faiss, n, d):
        found = [index.search(np.asarray(x[i:i + SEARCH_BLOCK], dtype=np.float32), 1)
                 for i in range(0, n, SEARCH_BLOCK)]
    return np.concatenate([f[0][:, 0] for f in found]), np.concatenate([f[1][:, 0] for f in found])


@contextmanager
def _one_call_kernel(faiss: Any, n: int, d: int) -> Iterator[None]:
    """Blocks of an n × d search take the kernel one call over all rows takes: faiss uses BLAS when rows × d reaches
    ``distance_compute_blas_threshold`` and its own loop below it, so a short last block would otherwise be summed in
    another order."""
    threshold = faiss.cvar.distance_compute_blas_threshold
    if n * d >= threshold:
        faiss.cvar.distance_compute_blas_threshold = 0
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold


def _check_finite(x: np.ndarray) -> None:
    for i in range(0, len(x), SEARCH_BLOCK):
        bad = ~np.isfinite(x[i:i + SEARCH_BLOCK]).all(axis=1)
        if bad.any():
            raise ValueError(f"k-means input: row {i + int(np.argmax(bad))} (of {len(x)}) is not finite (NaN/inf)")

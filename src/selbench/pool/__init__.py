"""Pools of visual-instruction samples: LLaVA-format reader, validator and parquet manifest.

Names are imported on first use, so that image-check worker processes (``selbench.pool.images``) start without
pandas and pyarrow."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selbench.pool.errors import PoolError, PoolIssue
    from selbench.pool.fingerprint import FingerprintDiff, check_fingerprint, compare_pools
    from selbench.pool.llava import IMAGE_TOKEN, PoolReport, Sample, read_pool
    from selbench.pool.manifest import Manifest, build_manifest, load_manifest, manifest_from_pool, save_manifest

_WHERE = {
    "IMAGE_TOKEN": "llava", "PoolIssue": "errors", "PoolError": "errors", "PoolReport": "llava",
    "Sample": "llava", "read_pool": "llava", "Manifest": "manifest", "build_manifest": "manifest",
    "load_manifest": "manifest", "manifest_from_pool": "manifest", "save_manifest": "manifest",
    "FingerprintDiff": "fingerprint", "check_fingerprint": "fingerprint", "compare_pools": "fingerprint",
}

__all__ = [
    "IMAGE_TOKEN", "PoolError", "PoolIssue", "PoolReport", "Sample", "read_pool",
    "Manifest", "build_manifest", "load_manifest", "manifest_from_pool", "save_manifest",
    "FingerprintDiff", "check_fingerprint", "compare_pools",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"selbench.pool.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'selbench.pool' has no attribute {name!r}")

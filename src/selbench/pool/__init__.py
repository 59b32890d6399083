"""Pools of visual-instruction samples: LLaVA-format reader, validator and parquet manifest."""

from selbench.pool.llava import IMAGE_TOKEN, PoolIssue, PoolReport, Sample, read_pool
from selbench.pool.manifest import Manifest, build_manifest, load_manifest

__all__ = [
    "IMAGE_TOKEN", "PoolIssue", "PoolReport", "Sample", "read_pool",
    "Manifest", "build_manifest", "load_manifest",
]

"""Validate the pool and write its manifest (what every other stage reads)."""

from __future__ import annotations

import json
from pathlib import Path

from selbench.harness.contracts import PrepareConfig
from selbench.harness.store import Job, Store
from selbench.pool.fingerprint import check_fingerprint
from selbench.pool.manifest import manifest_from_pool, save_manifest


def run(job: Job, store: Store, out: Path) -> dict:
    c = PrepareConfig.parse(job)
    manifest, report = manifest_from_pool(c.pool, c.images, strict=c.strict)
    if c.fingerprint:  # a fixed pool: fail here, before any GPU work, saying how it differs
        check_fingerprint(manifest, c.fingerprint, c.reference_manifest)
    save_manifest(manifest, out / "manifest.parquet")
    (out / "skipped.json").write_text(json.dumps([i.__dict__ for i in report.issues], indent=1))
    return {"n_samples": len(manifest), "n_skipped": len(report.issues), "content_hash": manifest.content_hash}

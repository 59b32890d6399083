"""Columnar manifest of a validated pool: one parquet row per usable sample, a stable integer index, and a
content hash that keys every downstream cache (a changed pool changes every stage key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from selbench.pool.llava import PoolReport, Sample, read_pool

MANIFEST_VERSION = 1
COLUMNS = ["index", "uid", "source_id", "row", "image", "image_sha256", "turns", "n_turns", "skill"]


@dataclass
class Example:
    """One conversation as training and extraction consume it: (role, text) turns and its image."""

    turns: list[tuple[str, str]]
    image: Path | bytes | None  # a file, PNG bytes, or no image


@dataclass
class Manifest:
    """A loaded pool. ``frame.index`` (column ``index``) is the integer every selector returns."""

    frame: pd.DataFrame
    image_root: Path
    content_hash: str
    source: str
    _turns: list[list[tuple[str, str]]] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_image(self) -> "pd.Series[bool]":
        return self.frame["image"].notna()

    def turns(self, i: int) -> list[tuple[str, str]]:
        if self._turns is None:  # parsed once: extraction, training and XMAS's checkpoints all read them
            self._turns = [[(r, t) for r, t in json.loads(s)] for s in self.frame["turns"]]
        return self._turns[i]

    def image_path(self, i: int) -> Path | None:
        image = self.frame["image"].iat[i]
        return None if pd.isna(image) else self.image_root / str(image)


def examples(pool: Manifest, indices: Iterable[int] | None = None) -> list[Example]:
    """The pool's rows (all, or ``indices`` in that order) as examples for training and feature extraction."""
    idx = range(len(pool)) if indices is None else indices
    return [Example(pool.turns(i), pool.image_path(i)) for i in idx]


def _content_hash(samples: list[Sample]) -> str:
    h = hashlib.sha256(f"selbench-manifest-v{MANIFEST_VERSION}".encode())
    for s in samples:
        h.update(json.dumps([s.uid, s.image, s.image_sha256, s.turns], ensure_ascii=False).encode())
    return h.hexdigest()


def build_manifest(report: PoolReport, image_root: str | Path) -> Manifest:
    rows = [
        {
            "index": i,
            "uid": s.uid,
            "source_id": s.source_id,
            "row": s.row,
            "image": s.image,
            "image_sha256": s.image_sha256,
            "turns": json.dumps(s.turns, ensure_ascii=False),
            "n_turns": len(s.turns) // 2,
            "skill": s.extra.get("skill"),
        }
        for i, s in enumerate(report.samples)
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return Manifest(frame, Path(image_root), _content_hash(report.samples), report.path)


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {
        b"selbench.content_hash": manifest.content_hash.encode(),
        b"selbench.image_root": str(manifest.image_root).encode(),
        b"selbench.source": manifest.source.encode(),
        b"selbench.manifest_version": str(MANIFEST_VERSION).encode(),
    }
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(manifest.frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def load_manifest(path: str | Path) -> Manifest:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    return Manifest(
        table.to_pandas(),
        Path(meta[b"selbench.image_root"].decode()),
        meta[b"selbench.content_hash"].decode(),
        meta[b"selbench.source"].decode(),
    )


def manifest_from_pool(
    pool: str | Path, images: str | Path | None = None, *, strict: bool = False
) -> tuple[Manifest, PoolReport]:
    pool = Path(pool)
    image_root = Path(images) if images is not None else pool.parent
    report = read_pool(pool, image_root, strict=strict)
    return build_manifest(report, image_root), report

"""Columnar manifest of a validated pool: one parquet row per usable sample, a stable integer index, and a
content hash that keys every downstream cache (a changed pool changes every stage key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_str  # what json.dumps(str, ensure_ascii=False) uses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from selbench.pool.llava import PoolReport, read_pool

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


FINGERPRINT_COLUMNS = ["uid", "image", "image_sha256", "turns"]


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'  # what json.dumps(str, ensure_ascii=False) escapes: quote, backslash, controls


def _json_literals(arr: pa.Array) -> pa.Array:
    """Each value as ``json.dumps(value, ensure_ascii=False)`` (None → ``null``): quoted by an arrow kernel,
    unless some value needs escaping (then by json's own encoder)."""
    import pyarrow.compute as pc

    if pc.any(pc.match_substring_regex(arr, _NEEDS_ESCAPE)).as_py():
        return pa.array(["null" if v is None else _json_str(v) for v in arr.to_pylist()], pa.large_string())
    quote = pa.scalar('"', pa.large_string())
    return pc.fill_null(pc.binary_join_element_wise(quote, arr, quote, pa.scalar("", pa.large_string())), "null")


def _row_text_arrays(table: pa.Table, chunk: int = 65_536) -> Iterator[pa.Array]:
    """Each row as ``json.dumps([uid, image, image_sha256, turns], ensure_ascii=False)`` — the turns column
    inserted verbatim (it is that JSON already) — as arrow strings, a chunk at a time."""
    import pyarrow.compute as pc

    text = {t: pa.scalar(t, pa.large_string()) for t in ("[", ", ", "]", "")}
    for batch in table.select(FINGERPRINT_COLUMNS).to_batches(max_chunksize=chunk):
        uid, image, sha, turns = (c.cast(pa.large_string()) for c in batch.columns)
        yield pc.binary_join_element_wise(
            text["["], _json_literals(uid), text[", "], _json_literals(image), text[", "], _json_literals(sha),
            text[", "], turns, text["]"], text[""])


def _row_texts(table: pa.Table) -> Iterator[list[str]]:
    for arr in _row_text_arrays(table):
        yield arr.to_pylist()


def content_hash(table: pa.Table) -> str:
    """The pool's fingerprint: sha256 over every kept row's uid, image path, image sha256 (of the file's bytes)
    and normalised turns, in order. Same formula since manifest version 1, so existing manifests keep their hash.
    The rows' text is hashed straight from arrow's buffer (no Python string per row)."""
    h = hashlib.sha256(f"selbench-manifest-v{MANIFEST_VERSION}".encode())
    for arr in _row_text_arrays(table):
        if len(arr):
            offsets = memoryview(arr.buffers()[1]).cast("q")  # int64 offsets of a large_string array
            start, end = offsets[arr.offset], offsets[arr.offset + len(arr)]
            h.update(memoryview(arr.buffers()[2])[start:end])
    return h.hexdigest()


def _skill(value: object) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _frame_table(report: PoolReport) -> pa.Table:
    if report.table is not None:
        t = report.table
    else:  # a report assembled by hand from samples
        s = report.samples
        t = pa.table({
            "row": pa.array([x.row for x in s], pa.int64()),
            "uid": pa.array([x.uid for x in s], pa.large_string()),
            "source_id": pa.array([x.source_id for x in s], pa.large_string()),
            "image": pa.array([x.image for x in s], pa.large_string()),
            "image_sha256": pa.array([x.image_sha256 for x in s], pa.large_string()),
            "turns": pa.array([json.dumps(x.turns, ensure_ascii=False) for x in s], pa.large_string()),
            "n_turns": pa.array([len(x.turns) // 2 for x in s], pa.int64()),
            "skill": pa.array([_skill(x.extra.get("skill")) for x in s], pa.large_string()),
        })
    index = pa.array(np.arange(t.num_rows, dtype=np.int64))
    return pa.table({"index": index, **{c: t[c] for c in COLUMNS[1:]}})


def build_manifest(report: PoolReport, image_root: str | Path) -> Manifest:
    table = _frame_table(report)
    return Manifest(table.to_pandas(), Path(image_root), content_hash(table), report.path)


ROW_GROUP = 65_536  # rows per parquet row group (written from one contiguous slice: bytes independent of chunking)


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write the manifest as parquet. The layout depends only on the rows, never on how the frame happens to be
    chunked in memory, so the same pool always gives the same bytes; memory beyond the frame is one row group."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {
        b"selbench.content_hash": manifest.content_hash.encode(),
        b"selbench.image_root": str(manifest.image_root).encode(),
        b"selbench.source": manifest.source.encode(),
        b"selbench.manifest_version": str(MANIFEST_VERSION).encode(),
    }
    table = pa.Table.from_pandas(manifest.frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with pq.ParquetWriter(tmp, table.schema) as writer:
        for start in range(0, max(table.num_rows, 1), ROW_GROUP):
            writer.write_table(table.slice(start, ROW_GROUP).combine_chunks())
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
    pool: str | Path,
    images: str | Path | None = None,
    *,
    strict: bool = False,
    decode_images: bool = False,
    workers: int | None = None,
    image_cache: str | Path | None = None,
    cache_rows: bool = True,
    progress: bool = True,
) -> tuple[Manifest, PoolReport]:
    """Read, validate and index a pool in one streaming pass (options as ``read_pool``). The report's
    ``samples`` are built only if asked for; the manifest comes from the columns."""
    pool = Path(pool)
    image_root = Path(images) if images is not None else pool.parent
    report = read_pool(pool, image_root, strict=strict, decode_images=decode_images, workers=workers,
                       image_cache=image_cache, cache_rows=cache_rows, progress=progress)
    return build_manifest(report, image_root), report

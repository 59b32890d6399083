"""Fixed pools: a manifest's fingerprint, what differs between two manifests, and a check against a pinned one.

The fingerprint is the manifest's ``content_hash`` (``manifest.content_hash``): sha256 over every kept row's uid,
image path, image sha256 (of the file's bytes) and normalised turns, in index order. So it changes when a row is
added, removed, reordered or edited, or when an image file's bytes change — and nothing else (not the image root,
not the pool file's formatting or key order, not skipped rows' contents).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from selbench.pool.errors import PoolError
from selbench.pool.manifest import Manifest, _row_texts

MIN_PREFIX = 12  # an abbreviated fingerprint (as `selbench pool check` prints) must have at least this many hex digits


@dataclass(frozen=True)
class FingerprintDiff:
    """How manifest ``b`` differs from ``a``. Rows are matched by uid, images by path."""

    fingerprint_a: str
    fingerprint_b: str
    rows_a: int
    rows_b: int
    rows_added: int  # uids only in b
    rows_removed: int  # uids only in a
    rows_changed: int  # same uid, different image, image bytes or turns
    order_changed: bool  # the rows both have are in a different order (indices shift)
    images_a: int  # unique image paths
    images_b: int
    images_added: int
    images_removed: int
    images_changed: int  # same path, different sha256

    @property
    def identical(self) -> bool:
        return self.fingerprint_a == self.fingerprint_b

    @property
    def rows_differing(self) -> int:
        return self.rows_added + self.rows_removed + self.rows_changed

    @property
    def images_differing(self) -> int:
        return self.images_added + self.images_removed + self.images_changed

    def __str__(self) -> str:
        if self.identical:
            return f"identical ({self.rows_a:,} rows, {self.images_a:,} images)"
        rows = (f"{self.rows_differing:,} rows differ ({self.rows_added:,} added, {self.rows_removed:,} removed, "
                f"{self.rows_changed:,} changed)")
        if self.order_changed:
            rows += ", rows reordered"
        images = (f"{self.images_differing:,} images differ ({self.images_added:,} added, "
                  f"{self.images_removed:,} removed, {self.images_changed:,} changed)")
        return f"{rows}; {images}"


_COLUMNS = ["uid", "image", "image_sha256", "turns"]


@dataclass
class _Summary:
    """What comparing needs of one manifest: per-row digests and unique images (never the whole text)."""

    fingerprint: str
    source: str
    rows: pd.DataFrame  # uid, digest (64-bit, of the row's fingerprinted content), pos
    images: pd.DataFrame  # image, image_sha256 — unique paths


def _summarise(m: Manifest | str | Path) -> _Summary:
    """From a Manifest, or streamed from a manifest file (one row group at a time: bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables: Iterable[pa.Table]
    if isinstance(m, Manifest):
        tables = [pa.Table.from_pandas(m.frame[_COLUMNS], preserve_index=False)]
        fingerprint, source = m.content_hash, m.source
    else:
        pf = pq.ParquetFile(m)
        meta = pf.schema_arrow.metadata or {}
        fingerprint, source = meta[b"selbench.content_hash"].decode(), str(m)
        tables = (pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=65_536, columns=_COLUMNS))
    uids: list[pd.Series] = []
    digests: list[int] = []
    images: list[pd.DataFrame] = []
    for t in tables:
        digests += [int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)
                    for texts in _row_texts(t) for text in texts]
        uids.append(t["uid"].to_pandas())
        img = t.select(["image", "image_sha256"]).to_pandas()
        images.append(img[img["image"].notna()].drop_duplicates("image"))
    n = len(digests)
    rows = pd.DataFrame({"uid": pd.concat(uids, ignore_index=True) if uids else pd.Series([], dtype=str),
                         "digest": np.array(digests, np.int64), "pos": np.arange(n)})
    unique = (pd.concat(images, ignore_index=True).drop_duplicates("image") if images
              else pd.DataFrame({"image": [], "image_sha256": []}))
    return _Summary(fingerprint, source, rows, unique)


def compare_pools(a: Manifest | str | Path, b: Manifest | str | Path) -> FingerprintDiff:
    """What differs between two manifests (objects or parquet paths): rows by uid, images by path."""
    sa, sb = _summarise(a), _summarise(b)
    ra, rb = sa.rows, sb.rows
    both = ra.merge(rb, on="uid", how="inner", suffixes=("_a", "_b"))
    changed = int((both["digest_a"] != both["digest_b"]).sum())
    order_changed = not np.array_equal(np.argsort(both["pos_a"].to_numpy(), kind="stable"),
                                       np.argsort(both["pos_b"].to_numpy(), kind="stable"))
    ia, ib = sa.images, sb.images
    common = ia.merge(ib, on="image", how="inner", suffixes=("_a", "_b"))
    sha_a, sha_b = common["image_sha256_a"].fillna(""), common["image_sha256_b"].fillna("")
    return FingerprintDiff(
        sa.fingerprint, sb.fingerprint, len(ra), len(rb),
        rows_added=len(rb) - len(both), rows_removed=len(ra) - len(both), rows_changed=changed,
        order_changed=order_changed, images_a=len(ia), images_b=len(ib),
        images_added=len(ib) - len(common), images_removed=len(ia) - len(common),
        images_changed=int((sha_a != sha_b).sum()),
    )


def _normalise(expected: str) -> str:
    e = expected.strip().lower().removeprefix("sha256:")
    if len(e) < MIN_PREFIX or len(e) > 64 or any(c not in string.hexdigits for c in e):
        raise PoolError(f"not a pool fingerprint: {expected!r} (expected {MIN_PREFIX}–64 hex digits of the "
                        "manifest's content hash)")
    return e


def check_fingerprint(manifest: Manifest, expected: str, reference: Manifest | str | Path | None = None) -> None:
    """Raise :class:`PoolError` unless ``manifest``'s fingerprint is ``expected`` (the full 64 hex digits, or an
    abbreviation of at least 12). With a ``reference`` manifest (the pinned pool's, object or parquet path) the
    message counts the differing rows and images; without one it says the pool differs and how many rows it has."""
    want = _normalise(expected)
    got = manifest.content_hash
    if got.startswith(want):
        return
    head = f"pool fingerprint mismatch for {manifest.source}: expected {want}, got {got}"
    images = int(manifest.frame["image"].dropna().nunique())
    if reference is None:
        raise PoolError(f"{head}. The pool differs from the fixed one: it has {len(manifest):,} rows and "
                        f"{images:,} unique images. Compare with the fixed pool's manifest to see which rows and "
                        "images differ.")
    diff = compare_pools(reference, manifest)
    note = "" if diff.fingerprint_a.startswith(want) else \
        f" (note: the reference's own fingerprint is {diff.fingerprint_a}, not the expected one)"
    source = reference.source if isinstance(reference, Manifest) else str(reference)
    raise PoolError(f"{head}. Compared with the reference {source} ({diff.rows_a:,} rows){note}: {diff}.")

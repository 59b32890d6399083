"""Fixed pools: a manifest's fingerprint, what differs between two manifests, and a check against a pinned one.

The fingerprint is the manifest's ``content_hash`` (``manifest.content_hash``): sha256 over every kept row's uid,
image path, image sha256 (of the file's bytes) and normalised turns, in index order. So it changes when a row is
added, removed, reordered or edited, or when an image file's bytes change — and nothing else (not the image root,
not the pool file's formatting or key order, not skipped rows' contents).
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from selbench.pool.errors import PoolError
from selbench.pool.manifest import Manifest, _row_texts, load_manifest

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


def _load(m: Manifest | str | Path) -> Manifest:
    return m if isinstance(m, Manifest) else load_manifest(m)


def _row_digests(m: Manifest) -> pd.DataFrame:
    """uid → a 64-bit digest of the row's fingerprinted content (uid, image, image sha256, turns)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(m.frame[["uid", "image", "image_sha256", "turns"]], preserve_index=False)
    digests = np.fromiter(
        (int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little", signed=True)
         for texts in _row_texts(table) for t in texts), np.int64, len(m))
    return pd.DataFrame({"uid": m.frame["uid"].to_numpy(), "digest": digests, "pos": np.arange(len(m))})


def compare_pools(a: Manifest | str | Path, b: Manifest | str | Path) -> FingerprintDiff:
    """What differs between two manifests (objects or parquet paths): rows by uid, images by path."""
    ma, mb = _load(a), _load(b)
    ra, rb = _row_digests(ma), _row_digests(mb)
    both = ra.merge(rb, on="uid", how="inner", suffixes=("_a", "_b"))
    changed = int((both["digest_a"] != both["digest_b"]).sum())
    order_changed = not np.array_equal(np.argsort(both["pos_a"].to_numpy(), kind="stable"),
                                       np.argsort(both["pos_b"].to_numpy(), kind="stable"))

    def images(m: Manifest) -> pd.DataFrame:
        f = m.frame[["image", "image_sha256"]]
        return f[f["image"].notna()].drop_duplicates("image")

    ia, ib = images(ma), images(mb)
    common = ia.merge(ib, on="image", how="inner", suffixes=("_a", "_b"))
    sha_a, sha_b = common["image_sha256_a"].fillna(""), common["image_sha256_b"].fillna("")
    return FingerprintDiff(
        ma.content_hash, mb.content_hash, len(ma), len(mb),
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
    ref = _load(reference)
    diff = compare_pools(ref, manifest)
    note = "" if ref.content_hash.startswith(want) else \
        f" (note: the reference's own fingerprint is {ref.content_hash}, not the expected one)"
    raise PoolError(f"{head}. Compared with the reference {ref.source} ({len(ref):,} rows){note}: {diff}.")

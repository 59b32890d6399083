"""Image checks for a pool: every unique image once, in worker processes, cached on disk.

What a check does (per unique path under the image root):

- ``header`` (default): sha256 of the file's bytes (the image's identity in the manifest and its fingerprint), the
  format and size from the header (``PIL.Image.open`` + ``.size``, no pixel decoding), and a truncation check from
  the file's tail (JPEG end-of-image marker, PNG ``IEND`` chunk, WebP RIFF length) — a download cut short is the
  common corruption, and this catches it at the cost of reading bytes we hash anyway;
- ``decode``: the same, plus a full decode (``im.load()``) — slower, catches corrupt pixel data too.

Why sha256 of every byte rather than (size, header hash): the manifest has always keyed images by sha256
(PRISM computes features once per unique ``image_sha256``; the content hash of existing pools includes it), and a
partial hash would let two different images with equal size and header count as one. The file is read anyway
(header and tail), and one read serves the hash too; hashing runs at ~370 MB/s per core on these machines (no SHA
extensions), so the cold check of real LLaVA-665K images (~350K files, tens of GB) is bound by disk reads and
hashing — done once, then cached. (On the benchmark's small JPEGs, ``Image.open`` dominates: ~100 µs per image.)

The cache is a small SQLite file keyed by (absolute path, size, mtime_ns): a re-check of an unchanged pool only
stats its images (one batched lookup per 256). A file rewritten in place with the same size and mtime would be
missed — the usual make-style assumption, stated here. Failures are cached too (a broken file stays broken until
it changes).

Paths are confined to the image root lexically (:func:`confine`): absolute paths and ``..`` are rejected before
anything on disk is touched, so a message never reveals whether a file outside the root exists. Symlinks inside
the root are followed on purpose: LLaVA image folders are commonly assembled from symlinks to dataset copies, and
whoever controls the root's contents controls those.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import IO, Any, NamedTuple

from selbench.pool.errors import PoolError

HEADER, DECODE = 0, 1  # check levels (a cached result of a higher level serves a lower one)
CACHE_FILE = "image-checks.sqlite"
BATCH = 256  # images per task sent to a worker
WHOLE_FILE = 32 << 20  # files up to this size are read in one go; larger ones are streamed
_SCHEMA = """CREATE TABLE IF NOT EXISTS checks_v1 (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, level INTEGER NOT NULL,
    sha256 TEXT, problem TEXT, width INTEGER NOT NULL, height INTEGER NOT NULL)"""


class Checked(NamedTuple):
    """One image's check. ``problem`` is ``None`` for a usable image, else ``"missing"``, ``"read: …"`` or
    ``"decode: …"`` (formatted into a row's reason by :func:`reason`)."""

    sha256: str | None
    problem: str | None
    width: int
    height: int
    size: int
    mtime_ns: int
    fresh: bool  # computed now (False: from the cache)


def confine(image: str) -> str | None:
    """Why ``image`` may not be used as a path under the image root, or None. Lexical only (see the module doc)."""
    if "\x00" in image:
        return "image: the path contains a NUL character"
    if image.startswith("/"):
        return "image: absolute path; image paths must be relative to the image root"
    if ".." in image and ".." in image.split("/"):
        return "image: '..' in the path; image paths must stay inside the image root"
    return None


def reason(problem: str, path: str | Path) -> str:
    """A row's reason for an image problem (the path is under the image root, so naming it reveals nothing)."""
    if problem == "missing":
        return f"image: file not found: {path}"
    kind, _, detail = problem.partition(": ")
    if kind == "read":
        return f"image: cannot read {path}: {detail}"
    return f"image: cannot decode {path}: {detail}"


def _truncation(fmt: str | None, head: bytes, tail: bytes, size: int) -> str | None:
    if fmt == "JPEG" and b"\xff\xd9" not in tail:  # 0xFF is always stuffed inside scan data: EOI only at the end
        return "truncated: no JPEG end-of-image marker"
    if fmt == "PNG" and b"IEND" not in tail:
        return "truncated: no PNG IEND chunk"
    if fmt == "WEBP" and size < 8 + int.from_bytes(head[4:8], "little"):
        return "truncated: shorter than its RIFF header says"
    return None


_strict_lock = threading.Lock()


def _load_strictly(im: Any) -> None:
    """``im.load()`` that fails on a truncated or corrupt stream even where an imported library (lmms-eval sets it
    at import) turned on Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES``, which silently pads with grey."""
    from PIL import ImageFile

    with _strict_lock:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def inspect_image(path: str, level: int, size: int) -> tuple[str | None, str | None, int, int]:
    """(sha256, problem, width, height) of one regular file. Never raises for a bad file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            if size <= WHOLE_FILE:
                data = f.read()
                digest = hashlib.sha256(data).hexdigest()
                source: IO[bytes] = io.BytesIO(data)
                head, tail, size = data[:16], data[-64:], len(data)
            else:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                f.seek(0)
                head = f.read(16)
                f.seek(max(0, size - 64))
                tail = f.read()
                f.seek(0)
                source = f
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # DecompressionBombWarning: a big image is not an error here
                with Image.open(source) as im:
                    width, height = im.size
                    if level >= DECODE:
                        _load_strictly(im)
                        problem = None
                    else:
                        problem = _truncation(im.format, head, tail, size)
    except OSError as e:
        if isinstance(e, UnidentifiedImageError):
            return None, "decode: not an image file (unknown format)", 0, 0
        if e.strerror:  # the file itself could not be read
            return None, f"read: {e.strerror}", 0, 0
        return None, f"decode: {e}", 0, 0
    except Image.DecompressionBombError as e:
        return None, f"decode: too large to decode ({e})", 0, 0
    except Exception as e:  # noqa: BLE001 — any decoder failure is a property of the file, not a crash
        return None, f"decode: {type(e).__name__}: {e}", 0, 0
    if not problem and (width <= 0 or height <= 0):
        problem = f"empty image ({width}×{height})"
    if problem:
        return None, f"decode: {problem}", width, height
    return digest, None, width, height


def _connect_readonly(cache: str | None) -> sqlite3.Connection | None:
    if cache is None or not os.path.isfile(cache):
        return None
    try:
        conn = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)
        conn.execute("PRAGMA mmap_size = 1073741824")  # lookups without a read() per page
        conn.execute("SELECT 1 FROM checks_v1 LIMIT 1")
        return conn
    except sqlite3.Error:
        return None


def _cached(conn: sqlite3.Connection | None, paths: list[str]) -> dict[str, tuple]:
    """Cache rows for ``paths`` (one query per batch: per-path queries cost more than the stat)."""
    if conn is None or not paths:
        return {}
    try:
        marks = ",".join("?" * len(paths))
        return {r[0]: r[1:] for r in conn.execute(
            f"SELECT path, size, mtime_ns, level, sha256, problem, width, height FROM checks_v1 "
            f"WHERE path IN ({marks})", paths)}
    except sqlite3.Error:
        return {}


def check_batch(root: str, rels: Sequence[str], level: int, conn: sqlite3.Connection | None) -> list[Checked]:
    """Check images ``root/rel`` (root absolute), answering from the cache where size and mtime still match."""
    paths = [os.path.normpath(os.path.join(root, rel)) for rel in rels]
    known = _cached(conn, paths)
    out: list[Checked] = []
    for path in paths:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            out.append(Checked(None, "missing", 0, 0, -1, -1, False))
            continue
        except OSError as e:
            out.append(Checked(None, f"read: {e.strerror}", 0, 0, -1, -1, False))
            continue
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO (would block), a device
            out.append(Checked(None, "missing", 0, 0, -1, -1, False))
            continue
        hit = known.get(path)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns and (hit[2] >= level or hit[4]):
            out.append(Checked(hit[3], hit[4], hit[5], hit[6], st.st_size, st.st_mtime_ns, False))
            continue
        sha, problem, w, h = inspect_image(path, level, st.st_size)
        out.append(Checked(sha, problem, w, h, st.st_size, st.st_mtime_ns, True))
    return out


_worker_conn: sqlite3.Connection | None = None


def _init_worker(cache: str | None) -> None:
    global _worker_conn
    _worker_conn = _connect_readonly(cache)


def _worker_batch(root: str, rels: list[str], level: int) -> list[Checked]:
    return check_batch(root, rels, level, _worker_conn)


def resolve_cache(cache: str | Path | None) -> Path | None:
    """``cache`` is a file, or a folder that gets ``image-checks.sqlite``."""
    if cache is None:
        return None
    cache = Path(cache)
    return cache / CACHE_FILE if cache.is_dir() or not cache.suffix else cache


def default_workers(option: int | None) -> int:
    """min(usable CPUs, option); option None → all usable CPUs (at most 8)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8 if option is None else option))


def start_workers(n: int, cache: Path | None) -> ProcessPoolExecutor:
    """``n`` worker processes, started now — before the caller starts threads (a progress bar) or fills its
    memory: then they can be forked (fast, and no thread's lock is copied half-held). If other threads already run,
    a forkserver is used instead (the caller's main module must then be importable, as for any spawn)."""
    import multiprocessing
    import threading

    ctx: BaseContext
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
    else:
        server = multiprocessing.get_context("forkserver")
        server.set_forkserver_preload(["selbench.pool.images"])
        ctx = server
    executor = ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                                   initargs=(str(cache) if cache else None,))
    executor.submit(int).result()  # all workers exist from here on (the fork context starts them at once)
    return executor


def open_cache(cache: Path | None) -> tuple[Path | None, str | None]:
    """Create the cache's table if needed: (usable cache or None, why not)."""
    if cache is None:
        return None, None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(cache, timeout=30)
        with conn:
            conn.execute(_SCHEMA)
        conn.close()
    except (OSError, sqlite3.Error) as e:
        return None, f"image-check cache {cache} not usable ({e}); checking without it"
    return cache, None


@dataclass
class ImageChecker:
    """Checks unique images as the reader discovers them: ``add`` returns the image's slot, ``results`` the
    checks in slot order (independent of how many workers did them — determinism).

    With an ``executor`` (see :func:`start_workers`), batches go to its processes as they fill while the caller
    reads on; without one, everything is checked in this process when ``results`` is called."""

    root: Path
    level: int = HEADER
    executor: ProcessPoolExecutor | None = None
    cache: Path | None = None
    _pending: list[str] = field(default_factory=list)
    _parts: list[Future[list[Checked]] | list[Checked]] = field(default_factory=list)
    rels: list[str] = field(default_factory=list)
    n_cached: int = 0
    cache_error: str | None = None

    def __post_init__(self) -> None:
        self._root = os.path.abspath(self.root)

    def add(self, rel: str) -> int:
        self.rels.append(rel)
        self._pending.append(rel)
        if self.executor is not None and len(self._pending) >= BATCH:
            self._submit()
        return len(self.rels) - 1

    def _submit(self) -> None:
        assert self.executor is not None
        rels, self._pending = self._pending, []
        for i in range(0, len(rels), BATCH):
            self._parts.append(self.executor.submit(_worker_batch, self._root, rels[i:i + BATCH], self.level))

    def results(self, advance: Callable[[int], None] = lambda n: None) -> list[Checked]:
        """Every check, in slot order; writes fresh ones to the cache."""
        try:
            if self.executor is not None and self._pending:
                self._submit()
            elif self._pending:
                conn = _connect_readonly(str(self.cache)) if self.cache else None
                rels, self._pending = self._pending, []
                for i in range(0, len(rels), BATCH):
                    checked = check_batch(self._root, rels[i:i + BATCH], self.level, conn)
                    self._parts.append(checked)
                    advance(len(checked))
                if conn is not None:
                    conn.close()
            out: list[Checked] = []
            for part in self._parts:
                if isinstance(part, list):
                    out += part
                else:
                    done = part.result()
                    advance(len(done))
                    out += done
        except BrokenProcessPool:
            raise PoolError("image checks failed: a worker process died (out of memory?)") from None
        self.n_cached = sum(not c.fresh and c.size >= 0 for c in out)
        self._write_cache(out)
        return out

    def _write_cache(self, checks: list[Checked]) -> None:
        if self.cache is None:
            return
        rows = [(os.path.normpath(os.path.join(self._root, rel)), c.size, c.mtime_ns, self.level, c.sha256,
                 c.problem, c.width, c.height)
                for rel, c in zip(self.rels, checks, strict=True) if c.fresh]
        if not rows:
            return
        try:
            conn = sqlite3.connect(self.cache, timeout=30)
            with conn:
                conn.executemany("INSERT OR REPLACE INTO checks_v1 VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.close()
        except sqlite3.Error as e:
            self.cache_error = f"image-check cache {self.cache} not written ({e})"

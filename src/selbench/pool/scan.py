"""Streaming pool preparation: rows → columns, unique images → checks, then unique ids — in bounded memory, on
every core.

The file is read in byte segments (``jsonstream.read_segment``). Each segment's rows are validated
(``llava.parse_row``) into pyarrow record batches of at most ``FLUSH`` rows, so no per-row Python object outlives
its batch. With several workers, segments are parsed by worker processes (a bounded number in flight) and image
checks go to the same processes as this process meets each image path for the first time; with one worker, or
a small file, everything runs here in one pass. At the end: image failures become issues, ids are counted and
unique ids minted with arrow kernels, and the kept rows form one (chunked) table.

Determinism: no result depends on timing or on the number of workers — segments are accepted in file order
(a speculative one only if its first row starts where the previous one's last row ended; otherwise it is re-read
from there), checks are gathered by slot, and ``save_manifest`` writes a layout independent of chunking — so the
same pool gives a byte-identical manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc  # noqa: F401  (pa.ipc)

from selbench.pool import jsonstream
from selbench.pool.errors import PoolError, PoolIssue, is_utf8
from selbench.pool.images import (
    DECODE,
    HEADER,
    ImageChecker,
    default_workers,
    open_cache,
    reason,
    resolve_cache,
    start_workers,
)
from selbench.pool.jsonstream import Located, Reset, Segment, read_segment
from selbench.pool.llava import PoolReport, parse_row

FLUSH = 16_384  # rows per arrow batch (their Python objects are the reader's transient memory)
PARALLEL_FROM_BYTES = 1 << 20  # smaller pools are read in this process (worker start-up would dominate)
SEGMENT_BYTES = (1 << 20, 16 << 20)  # segment size bounds; aim at ~4 segments per worker
SCHEMA = pa.schema([
    ("row", pa.int64()), ("source_id", pa.large_string()), ("image", pa.large_string()),
    ("turns", pa.large_string()), ("n_turns", pa.int64()), ("skill", pa.large_string()),
    ("extra", pa.large_string()),
])


@dataclass
class SegmentRows:
    """A parsed segment: its kept-so-far rows as record batches (row = index within the segment), issues (rows
    within the segment, places within the segment), and ids of rejected rows (they still count as repeats)."""

    seg: Segment
    batches: list[pa.RecordBatch] = field(default_factory=list)
    issues: list[Located] = field(default_factory=list)
    bad_ids: list[str] = field(default_factory=list)


def parse_segment(path: str, begin: int, end: int, exact: bool,
                  on_flush: Callable[[Segment, int], None] | None = None) -> SegmentRows:
    """Parse and validate the rows starting in bytes [begin, end) (``jsonstream.read_segment``)."""
    seg, rows = read_segment(path, begin, end, exact=exact)
    out = SegmentRows(seg)
    buffer: list[tuple[Any, ...]] = []
    n_kept = 0

    def flush() -> None:
        if buffer:
            cols = zip(*buffer, strict=True)
            out.batches.append(pa.RecordBatch.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(cols, SCHEMA, strict=True)], schema=SCHEMA))
            buffer.clear()

    for row, rec in rows:
        if isinstance(rec, Reset):  # a speculative false start: nothing of it counts
            out = SegmentRows(seg)
            buffer.clear()
            continue
        if isinstance(rec, Located):
            out.issues.append(rec)
            continue
        parsed = parse_row(rec)
        if isinstance(parsed, str):
            sid = rec.get("id") if isinstance(rec, dict) else None
            sid = None if sid is None or isinstance(sid, dict | list) else str(sid)
            out.issues.append(Located(row, sid or None, parsed, 0, 0))
            if sid is not None:
                out.bad_ids.append(sid)
            continue
        buffer.append((row, *parsed))
        n_kept += 1
        if len(buffer) >= FLUSH:
            flush()
            if on_flush is not None:
                on_flush(seg, n_kept)
    flush()
    return out


def _segments(size: int, workers: int) -> list[tuple[int, int]]:
    lo, hi = SEGMENT_BYTES
    step = int(min(hi, max(lo, size // (4 * workers))))
    return [(b, min(size, b + step)) for b in range(0, size, step)] or [(0, 1)]


def _eta(done: float, total: float, elapsed: float) -> str:
    if done <= 0 or total <= 0:
        return "?"
    left = elapsed * (total - done) / done
    return f"{int(left // 60)}:{int(left % 60):02d}"


class _Collector:
    """Accepts segments in file order: shifts rows and lines, assigns image slots, gathers issues and batches."""

    def __init__(self, path: Path, checker: ImageChecker | None) -> None:
        self.path, self.checker = path, checker
        self.jsonl = path.suffix == ".jsonl"
        self.slots: dict[str, int] = {}
        self.batches: list[pa.RecordBatch] = []
        self.issues: list[PoolIssue] = []
        self.bad_ids: list[str] = []
        self.n_rows = 0  # rows accepted so far (the next segment's first row index)
        self.lines = 0  # newlines before the next segment (JSON lists)

    def accept(self, res: SegmentRows, line0: int, read_from: int) -> None:
        row0 = self.n_rows
        col0 = -1  # computed only if an issue on the segment's first line needs it

        def col_origin() -> int:
            nonlocal col0
            if col0 < 0:
                col0 = jsonstream.column_offset(self.path, read_from)
            return col0

        if self.jsonl:
            line0 = row0  # a JSONL row is a line
        jsonstream.raise_error(self.path, res.seg, row0, line0, 0 if self.jsonl or res.seg.error is None
                               or res.seg.error[1] != 1 else col_origin())
        for i in res.issues:
            first_line = i.line == 1 and not self.jsonl
            self.issues.append(jsonstream.locate(i, row0, line0, col_origin() if first_line else 0))
        self.bad_ids += res.bad_ids
        for b in res.batches:
            images = b.column(2).to_pylist()
            slots = [-1] * len(images)
            if self.checker is not None:
                for k, img in enumerate(images):
                    if img is not None:
                        slot = self.slots.get(img, -1)
                        if slot < 0:
                            slot = self.slots[img] = self.checker.add(img)
                        slots[k] = slot
            rows = pc.add(b.column(0), pa.scalar(row0, pa.int64()))
            self.batches.append(pa.RecordBatch.from_arrays(
                [rows, *b.columns[1:], pa.array(slots, pa.int64())], names=[*SCHEMA.names, "slot"]))
        self.n_rows += res.seg.n_rows

    def accept_cached(self, rows: CachedRows) -> None:
        """Rows parsed by an earlier run (``_load_rows``): only the image slots are new."""
        self.issues += rows.issues
        self.bad_ids += rows.bad_ids
        for b in rows.table.to_batches(max_chunksize=FLUSH):
            self.accept(SegmentRows(Segment(0, 0), [b]), 0, 0)
        self.n_rows = rows.n_rows


def _read_parallel(path: Path, size: int, executor: ProcessPoolExecutor, workers: int, col: _Collector,
                   advance: Callable[..., None]) -> None:
    segments = _segments(size, workers)
    pending: deque[Future[SegmentRows]] = deque()
    submitted = 0
    expected: int | None = 0  # where the next accepted segment's first row must start (None: the list closed)
    t0 = time.perf_counter()
    for j, (begin, end) in enumerate(segments):
        while submitted < len(segments) and len(pending) < workers + 1:
            b, e = segments[submitted]
            pending.append(executor.submit(parse_segment, str(path), b, e, b == 0))
            submitted += 1
        res = pending.popleft().result()
        if col.jsonl or j == 0:
            col.accept(res, col.lines, begin)
        elif expected is not None and expected < end:
            if res.seg.start == expected:
                col.accept(res, col.lines, begin)
            else:  # speculation missed: re-read this segment from its known first row (rare)
                with open(path, "rb") as f:
                    before = jsonstream.count_newlines(f, begin, expected)
                exact = parse_segment(str(path), expected, end, True)
                col.accept(exact, col.lines + before, expected)
                res = SegmentRows(Segment(begin, end, exact.seg.start, exact.seg.next, exact.seg.n_rows,
                                          res.seg.newlines))
        if not col.jsonl and (j == 0 or (expected is not None and expected < end)):
            expected = res.seg.next
        col.lines += res.seg.newlines
        el = time.perf_counter() - t0
        advance(end - begin, info=f"{col.n_rows:,} rows · {col.n_rows / max(el, 1e-9):,.0f} rows/s · ETA "
                                  f"{_eta(end, size, el)} · {len(col.slots):,} images")


def _read_here(path: Path, size: int, col: _Collector, advance: Callable[..., None]) -> None:
    t0 = time.perf_counter()
    done = [0]

    def on_flush(seg: Segment, n: int) -> None:
        el = time.perf_counter() - t0
        advance(seg.head - done[0], info=f"{n:,} rows · {n / max(el, 1e-9):,.0f} rows/s · ETA "
                                         f"{_eta(seg.head, size, el)}")
        done[0] = seg.head

    col.accept(parse_segment(str(path), 0, max(size, 1), True, on_flush), 0, 0)
    advance(size - done[0], info=f"{col.n_rows:,} rows")


# ------------------------------------------------------------------------------------------------ rows cache
# Beside the image-check cache: the parsed rows of a pool file, keyed by its (path, size, mtime_ns) and by the
# source of the code that parses them — so a re-check of an unchanged pool maps columns instead of parsing 1 GB of
# JSON, and any change to the file or to the parser re-parses. One file per pool path (the latest parse), an
# uncompressed Arrow IPC file about the size of the pool's JSON: memory-mapped, it loads in milliseconds.


@dataclass
class CachedRows:
    table: pa.Table  # SCHEMA columns, rows numbered in the file
    issues: list[PoolIssue]
    bad_ids: list[str]
    n_rows: int


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    import selbench
    from selbench.pool import errors, images, llava

    h = hashlib.sha256(b"selbench-pool-rows-v1")
    for module in (errors, images, jsonstream, llava, sys.modules[__name__]):
        try:
            h.update(Path(str(module.__file__)).read_bytes())
        except OSError:  # no readable source (a zipped install): the package version stands in for it
            h.update(selbench.__version__.encode())
    return h.hexdigest()


def _rows_file(cache: Path, path: Path) -> Path:
    return cache.parent / f"pool-rows-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}.arrow"


def _rows_key(path: Path) -> str:
    st = path.stat()
    return json.dumps({"pool": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "code": _code_version()}, sort_keys=True)


def _load_rows(file: Path, key: str) -> CachedRows | None:
    """The cached rows, memory-mapped (an uncompressed Arrow IPC file: no parse, no copy), or None."""
    try:
        with pa.memory_map(str(file)) as source:
            table = pa.ipc.open_file(source).read_all()
        if (table.schema.metadata or {}).get(b"selbench.rows_key") != key.encode():
            return None
        side = json.loads(file.with_suffix(".json").read_text())
        if side["key"] != key:
            return None
        issues = [PoolIssue(int(r), i, str(why)) for r, i, why in side["issues"]]
        return CachedRows(table.replace_schema_metadata(None), issues, side["bad_ids"], int(side["n_rows"]))
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None  # missing, stale or damaged: parse the file


def _save_rows(file: Path, key: str, rows: CachedRows) -> str | None:
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        side = {"key": key, "n_rows": rows.n_rows, "bad_ids": rows.bad_ids,
                "issues": [[i.row, i.id, i.reason] for i in rows.issues]}
        file.with_suffix(".json").write_text(json.dumps(side))
        table = rows.table.replace_schema_metadata({b"selbench.rows_key": key.encode()})
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        tmp.replace(file)  # last, and by rename: a reader that maps the old file keeps it intact
    except (OSError, pa.ArrowException) as e:
        tmp.unlink(missing_ok=True)
        return f"rows cache {file} not written ({e})"
    return None


def scan_pool(
    path: str | Path,
    images: str | Path | None = None,
    *,
    check_images: bool = True,
    decode_images: bool = False,
    workers: int | None = None,
    image_cache: str | Path | None = None,
    cache_rows: bool = True,
    progress: bool = True,
) -> PoolReport:
    """Stream a pool into a :class:`PoolReport` whose ``table`` holds the kept rows (see ``llava.read_pool``)."""
    from selbench.progress import progress_bar

    path = Path(path)
    if not path.is_file():
        raise PoolError(f"pool file not found: {path}")
    image_root = Path(images) if images is not None else path.parent
    if check_images and images is not None and not image_root.is_dir():
        raise PoolError(f"image root is not a folder: {image_root}")
    n_workers = default_workers(workers)
    size = path.stat().st_size
    cache, cache_error = open_cache(resolve_cache(image_cache)) if check_images else (None, None)
    t0, c0 = time.perf_counter(), time.process_time()
    parallel = n_workers > 1 and size >= PARALLEL_FROM_BYTES
    executor = start_workers(n_workers, cache) if parallel else None

    def bar(what: str, total: int) -> AbstractContextManager[Callable[..., None]]:
        return progress_bar(what, total=total) if progress else nullcontext(lambda *a, **k: None)

    rows_file = _rows_file(cache, path) if cache is not None and cache_rows else None
    key = _rows_key(path) if rows_file is not None else ""
    cached = _load_rows(rows_file, key) if rows_file is not None else None
    rows_cached = cached is not None
    try:
        checker = ImageChecker(image_root, DECODE if decode_images else HEADER, executor, cache) \
            if check_images else None
        col = _Collector(path, checker)
        with bar(f"reading {path.name}", max(size, 1)) as advance:
            if cached is not None:
                col.accept_cached(cached)
                advance(size, info=f"{col.n_rows:,} rows (parsed rows from the cache)")
            elif executor is not None:
                _read_parallel(path, size, executor, n_workers, col, advance)
            else:
                _read_here(path, size, col, advance)
        del cached
        t_read = time.perf_counter() - t0
        if rows_file is not None and not rows_cached:  # written while the workers check images
            parsed = pa.Table.from_batches(col.batches, schema=SCHEMA.append(pa.field("slot", pa.int64())))
            cache_error = cache_error or _save_rows(rows_file, key, CachedRows(
                parsed.drop_columns(["slot"]), sorted(col.issues, key=lambda i: i.row), col.bad_ids, col.n_rows))
            del parsed
        checks = []
        if checker is not None:
            n_unique = len(col.slots)
            with bar("checking images", n_unique) as advance:
                t1 = time.perf_counter()
                done = [0]

                def step(n: int) -> None:
                    done[0] += n
                    el = time.perf_counter() - t1
                    advance(n, info=f"{done[0] / max(el, 1e-9):,.0f} images/s · ETA {_eta(done[0], n_unique, el)}")

                checks = checker.results(step)
    except BrokenProcessPool:
        raise PoolError("pool reading failed: a worker process died (out of memory?)") from None
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    t_checks = time.perf_counter() - t0 - t_read
    table = pa.Table.from_batches(col.batches, schema=SCHEMA.append(pa.field("slot", pa.int64())))
    issues, bad_ids, n_rows = col.issues, col.bad_ids, col.n_rows
    del col

    # Image failures → issues; every parsed row still counts for repeated ids (as it always has).
    slot_col = table["slot"].to_numpy()
    keep = np.ones(len(slot_col), bool)
    if checks:
        ok = np.fromiter((c.problem is None for c in checks), bool, len(checks))
        bad = np.flatnonzero((slot_col >= 0) & ~ok[np.maximum(slot_col, 0)])
        if len(bad):
            rows = table["row"].to_numpy()
            sids = table["source_id"].take(pa.array(bad)).to_pylist()
            imgs = table["image"].take(pa.array(bad)).to_pylist()
            for i, sid, img in zip(bad, sids, imgs, strict=True):
                problem = checks[slot_col[i]].problem
                assert problem is not None
                issues.append(PoolIssue(int(rows[i]), sid, reason(problem, image_root / img)))
            keep[bad] = False
    counts = _id_counts(table["source_id"], bad_ids)
    if not keep.all():  # a filter copies every column
        table = table.filter(pa.array(keep))
        counts = counts[keep]
        slot_col = slot_col[keep]
    if checks:
        shas = pa.array([c.sha256 for c in checks] + [None], pa.large_string())
        sha_col = shas.take(pa.array(np.where(slot_col >= 0, slot_col, len(checks))))
    else:
        sha_col = pa.nulls(table.num_rows, pa.large_string())
    uid = unique_ids(table["source_id"].combine_chunks(), table["image"].combine_chunks(), counts)
    table = pa.table({
        "row": table["row"], "uid": uid, "source_id": table["source_id"], "image": table["image"],
        "image_sha256": sha_col, "turns": table["turns"], "n_turns": table["n_turns"], "skill": table["skill"],
        "extra": table["extra"],
    })
    issues.sort(key=lambda i: i.row)
    stats: dict[str, Any] = {
        "rows": n_rows, "kept": table.num_rows, "unique_images": len(checks),
        "images_cached": checker.n_cached if checker else 0, "rows_cached": rows_cached,
        "workers": n_workers if parallel else 1,
        "decode_images": decode_images, "read_s": round(t_read, 3), "images_wait_s": round(t_checks, 3),
        "total_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3),
    }
    if cache_error or (checker is not None and checker.cache_error):
        stats["cache_error"] = cache_error or (checker.cache_error if checker else None)
    return PoolReport(str(path), n_rows, issues=issues, table=table, image_root=image_root, stats=stats)


def _id_counts(source_ids: pa.ChunkedArray, bad_ids: list[str]) -> np.ndarray:
    """How often each parsed row's id occurs among all rows that have one (kept or not)."""
    n = len(source_ids)
    if n == 0:
        return np.zeros(0, np.int64)
    bad_ids = [i for i in bad_ids if is_utf8(i)]  # an id with a lone surrogate is never a kept row's
    every = pa.chunked_array([*source_ids.chunks, pa.array(bad_ids, pa.large_string())],
                             pa.large_string()).combine_chunks()
    codes = pc.dictionary_encode(every).indices.to_numpy()
    return np.bincount(codes)[codes[:n]]


def unique_ids(source_id: pa.Array, image: pa.Array, counts: np.ndarray) -> pa.Array:
    """An id that occurs once is kept; repeated ids become ``id::image#k`` (``k`` counts earlier kept rows with
    the same id and image; ``-`` for no image). A uid equal to an earlier one gets the smallest free ``~n``."""
    uid = source_id
    repeated = counts > 1
    if repeated.any():
        where = pa.array(repeated)
        sid = source_id.filter(where)
        img = pc.fill_null(image.filter(where), "-")
        k = _cumcount(pc.dictionary_encode(sid).indices.to_numpy(), pc.dictionary_encode(img).indices.to_numpy())
        sep = {t: pa.scalar(t, pa.large_string()) for t in ("#", "::")}
        minted = pc.binary_join_element_wise(sid, pc.binary_join_element_wise(
            img, pc.cast(pa.array(k), pa.large_string()), sep["#"]), sep["::"])
        uid = pc.replace_with_mask(source_id, where, minted)
    if pc.count_distinct(uid).as_py() == len(uid):
        return uid
    return pa.array(_disambiguate(uid.to_pylist()), pa.large_string())


def _cumcount(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions have the same (a, b) pair."""
    key = a.astype(np.int64) * (int(b.max()) + 1) + b
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    out = np.empty(len(key), np.int64)
    out[order] = np.arange(len(key)) - first
    return out


def _disambiguate(uids: list[str]) -> list[str]:
    """First occurrence keeps its uid; later duplicates get the smallest ``~n`` that no row uses."""
    taken = set(uids)
    seen: set[str] = set()
    out = []
    for u in uids:
        if u in seen:
            n = 1
            while f"{u}~{n}" in taken:
                n += 1
            u = f"{u}~{n}"
            taken.add(u)
        seen.add(u)
        out.append(u)
    return out


"""Pool files read one row at a time — a JSON list or JSON Lines — in memory bounded by the largest row, whole or
in byte segments that worker processes parse in parallel.

No streaming JSON library is in the lock (``ijson`` is not), so a JSON list is parsed with the standard
library's C scanner, ``json.JSONDecoder.raw_decode``, element by element over a sliding window of 4 MiB text
chunks: the same parser as ``json.loads``, without the whole file (LLaVA-665K is 1 GB) in memory at once.

Segments (``read_segment``): the file is cut into byte ranges; a segment's rows are those that *start* inside it
(the last one is read to its end, past the range). JSONL rows start after a newline. In a JSON list a row's start
cannot be known without parsing from the top, so a segment other than the first *speculates*: it starts at the
first ``,`` + ``{`` it finds and parses on. The caller accepts a segment only if its first row starts exactly where
the previous segment's last row ended (``Segment.start == previous.next``); otherwise it re-reads that range from
the known start (``exact=True``). Speculation only ever costs time, never changes a result.

Bad input becomes a per-row issue wherever the row's extent is still known, a :class:`PoolError` naming the line,
column and row otherwise — never a traceback:

- bytes that are not UTF-8 (decoded with ``surrogateescape``, so a bad byte shows up as a lone surrogate in the raw
  text, which valid UTF-8 can never produce) → an issue for that row;
- nesting deeper than the parser's recursion limit (``RecursionError``) and integers beyond Python's digit limit
  (``ValueError``) → an issue; the row is skipped by a bracket scanner that needs no recursion;
- broken syntax in a JSON list → a PoolError (the list cannot be trusted past it); in JSONL → an issue per line.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from selbench.pool.errors import PoolError, PoolIssue, is_utf8

CHUNK_BYTES = 1 << 22  # read size; rows are a few KB, so one chunk holds thousands of them
MAX_ROW_CHARS = 1 << 26  # 64 Mi characters: a row longer than this is not buffered further
SPECULATION_TRIES = 64  # false starts a speculative segment may discard before giving up (the caller re-reads)
_BOM = "\ufeff"
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
# Tokens for skipping a value without recursion: bracket runs, strings (unrolled loop), anything else.
_TOKEN = re.compile(r'[\[{]+|[\]}]+|"[^"\\]*(?:\\.[^"\\]*)*"|[^"\[\]{}]+', re.S)
_SCALAR = re.compile(r"[-+0-9.eE]+|true|false|null")
_CANDIDATE = re.compile(r",[ \t\n\r]*(?=\{)")  # where a speculative segment may find a row start
_KIND = {"{": "dict", '"': "str", "t": "bool", "f": "bool", "n": "NoneType"}


@dataclass(frozen=True)
class Located:
    """A row issue whose place is known relative to its segment (line 1 = the segment's first line)."""

    row: int
    id: str | None
    reason: str
    line: int
    col: int


class Reset:
    """Yielded by a speculative segment that found a false start: discard the rows it yielded so far."""


@dataclass
class Segment:
    """What reading a segment found, besides its rows."""

    begin: int
    end: int
    start: int | None = None  # byte offset where its first row starts (None: none starts in [begin, end))
    next: int | None = None  # byte offset where the row after its last starts (None: the list closed / EOF)
    n_rows: int = 0  # rows (JSON list elements; JSONL lines, blank ones included)
    newlines: int = 0  # newline bytes in [begin, end), for line numbers (JSON lists)
    head: int = 0  # bytes read so far (progress)
    error: tuple[str, int, int, int | None] | None = None  # (message, line, col, row), exact segments only




def _id_of(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("id"), str | int) and not isinstance(value["id"], bool):
        sid = str(value["id"])
        return None if _SURROGATE.search(sid) else sid
    return None


def _id_from_bytes(line: bytes) -> str | None:
    """The row's id, for the message about a row that is not UTF-8 (best effort)."""
    try:
        value = json.loads(line.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return _id_of(value)


def _bytelen(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


# ------------------------------------------------------------------------------------------------ JSON Lines


def _jsonl(f: IO[bytes], seg: Segment) -> Iterator[tuple[int, Any]]:
    limit = MAX_ROW_CHARS  # bytes here; a UTF-8 character is at least one
    pos = seg.begin
    if pos > 0:  # the line that starts before begin belongs to the previous segment
        f.seek(pos - 1)
        pos -= 1
        while True:
            skipped = f.readline(CHUNK_BYTES)
            pos += len(skipped)
            if not skipped or skipped.endswith(b"\n"):
                break
    else:
        f.seek(0)
    seg.start = pos
    row = -1
    while pos < seg.end:
        line = f.readline(limit + 1)
        if not line:
            break
        row += 1
        line_start, pos = pos, pos + len(line)
        seg.head = pos
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # skip the rest of the oversized line
                more = f.readline(CHUNK_BYTES)
                pos += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield row, Located(row, None, f"row: longer than {limit >> 20} MiB", row + 1, 1)
            continue
        if line_start == 0:
            line = line.removeprefix(b"\xef\xbb\xbf")
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield row, Located(row, _id_from_bytes(line), f"not valid UTF-8: byte 0x{line[e.start]:02x}", row + 1,
                               e.start + 1)
            continue
        try:
            yield row, json.loads(text)
        except json.JSONDecodeError as e:
            yield row, Located(row, None, f"invalid JSON: {e.msg}", row + 1, e.colno)
        except RecursionError:
            yield row, Located(row, None, "invalid JSON: nested too deeply to parse", row + 1, 1)
        except ValueError as e:  # e.g. an integer beyond Python's digit limit
            yield row, Located(row, None, f"invalid JSON: {e}", row + 1, 1)
    seg.n_rows = row + 1
    seg.next = pos if pos < seg.end else None


# ------------------------------------------------------------------------------------------------ JSON list


class _ArrayParser:
    """A JSON list, element by element, over a sliding text window ``buf`` that starts at byte ``base``."""

    def __init__(self, f: IO[bytes], seg: Segment, path: Path) -> None:
        self.f, self.seg, self.path = f, seg, path
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.eof = False
        self.dirty = False  # the window holds a byte that is not UTF-8
        self.lines = 0  # newlines before buf[0] (since the segment's first byte)
        self.col0 = 0  # characters between the last of them and buf[0]
        self.dropped = 0  # characters dropped from the window so far
        self.base = seg.begin  # byte offset of buf[0]
        self.head = seg.begin  # byte offset of the next read
        self.end_char: int | None = None  # buf index of byte seg.end, once the window reaches it
        f.seek(seg.begin)
        if seg.begin > 0:  # start at a character boundary: skip UTF-8 continuation bytes
            first = f.read(4)
            skip = next((i for i, b in enumerate(first) if b & 0xC0 != 0x80), len(first))
            self.base = self.head = seg.begin + skip
            f.seek(self.head)

    # -------------------------------------------------------------- window

    def fill(self, pos: int) -> int:
        """Drop ``buf[:pos]`` and read another chunk; returns where ``pos`` now is (0)."""
        if self.eof:
            return pos
        dropped = self.buf[:pos]
        newlines = dropped.count("\n")
        if newlines:
            self.lines += newlines
            self.col0 = len(dropped) - dropped.rfind("\n") - 1
        else:
            self.col0 += len(dropped)
        self.base += _bytelen(dropped)
        self.dropped += pos
        if self.end_char is not None:
            self.end_char -= pos
        raw = self.f.read(CHUNK_BYTES)
        r0, self.head = self.head, self.head + len(raw)
        self.seg.head = self.head
        lo, hi = max(0, self.seg.begin - r0), max(0, min(self.head, self.seg.end) - r0)
        self.seg.newlines += raw.count(b"\n", lo, hi)
        self.eof = not raw
        text = self.utf8.decode(raw, final=self.eof)
        if r0 == 0 and text:
            text = text.removeprefix(_BOM)
            self.base += 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        self.buf = self.buf[pos:] + text
        self.dirty = not is_utf8(self.buf)
        if self.end_char is None and (self.head >= self.seg.end or self.eof):
            # the window now holds byte seg.end: find its character index (element starts are ASCII, so the
            # comparison "row start ≥ end" is exact in characters once this is)
            want = max(0, self.seg.end - self.base)  # bytes from buf[0] to seg.end
            if self.buf.isascii():
                self.end_char = min(want, len(self.buf))
            else:
                raw_buf = self.buf.encode("utf-8", "surrogateescape")
                while 0 < want < len(raw_buf) and raw_buf[want] & 0xC0 == 0x80:
                    want -= 1  # back to a character boundary
                self.end_char = len(raw_buf[:want].decode("utf-8", "surrogateescape"))
        return 0

    def byte_at(self, pos: int) -> int:
        return self.base + _bytelen(self.buf[:pos])

    def past_end(self, pos: int) -> bool:
        return self.end_char is not None and pos >= self.end_char

    def where(self, pos: int) -> tuple[int, int]:
        line = self.lines + self.buf.count("\n", 0, pos) + 1
        last = self.buf.rfind("\n", 0, pos)
        return line, (pos - last if last >= 0 else self.col0 + pos + 1)

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.buf, pos).end()  # type: ignore[union-attr]  # matches the empty string
            if pos < len(self.buf) or self.eof:
                return pos
            pos = self.fill(pos)

    def fail(self, pos: int, what: str, row: int | None) -> None:
        m = _SURROGATE.match(self.buf, pos)
        if m:
            what = f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02x})"
        line, col = self.where(pos)
        self.seg.error = (what, line, col, row)

    # -------------------------------------------------------------- rows

    def rows(self, exact: bool) -> Iterator[tuple[int, Any]]:
        """Rows starting in [begin, end). First segment: from the list's ``[``; ``exact``: ``begin`` is a row
        start; otherwise speculate (module doc)."""
        seg = self.seg
        pos = self.skip_ws(self.fill(0))
        if seg.begin == 0:
            if pos >= len(self.buf):
                raise PoolError(f"{self.path}: empty file, expected a JSON list of samples")
            first = self.buf[pos]
            if first != "[":
                kind = _KIND.get(first, "number" if first in "-0123456789" else None)
                if kind is None:
                    self.fail(pos, "expected a JSON list of samples", None)
                    return
                raise PoolError(f"{self.path}: expected a JSON list of samples, got {kind}")
            pos = self.skip_ws(pos + 1)
        elif not exact:
            found = self.speculate(pos)
            if found is None:
                return
            pos = found
        tries = 0
        while True:
            seg.start = self.byte_at(pos)
            result = yield from self.elements(pos, exact or seg.begin == 0)
            if result is not None:
                return
            # a speculative false start: discard its rows and look again after it
            yield 0, Reset()
            seg.error, seg.n_rows, seg.start = None, 0, None
            tries += 1
            found = self.speculate(max(0, self._false_start + 1 - self.dropped))
            if found is None or tries > SPECULATION_TRIES:
                return
            pos = found

    _false_start = 0  # absolute character index (window index + dropped) of the last false start

    def speculate(self, pos: int) -> int | None:
        """The first ``,``-then-``{`` at or after ``pos`` (a row start, perhaps) before the segment's end."""
        while True:
            m = _CANDIDATE.search(self.buf, max(0, pos - 1))
            if m is not None and (m.end() < len(self.buf) or self.eof):
                start = m.end()
                if self.past_end(start):
                    return None
                return start
            if self.eof or self.past_end(len(self.buf)):
                return None
            keep = self.buf.rfind(",")
            pos = self.fill(keep if keep >= 0 else len(self.buf)) + 1

    def elements(self, pos: int, exact: bool) -> Generator[tuple[int, Any], None, bool | None]:
        """Parse rows from ``pos``; returns True when done (end of segment or of the list), None after a false
        start in speculative mode (the error is then in ``_false_start``)."""
        seg = self.seg
        row = 0
        first_abs = self.dropped + pos
        while True:
            if pos >= len(self.buf):
                if exact:
                    self.fail(pos, "the list is not closed (the file ends)", None)
                    return True
                self._false_start = first_abs
                return None
            if self.buf[pos] == "]":
                end = self.skip_ws(pos + 1)
                if end < len(self.buf):
                    if not exact:  # a list inside a row (the turns) closed: a false start
                        self._false_start = first_abs
                        return None
                    self.fail(end, "extra data after the list", None)
                seg.next = None
                return True
            if self.past_end(pos):
                seg.next = self.byte_at(pos)
                return True
            value, pos = self.element(pos, row)
            if not exact and row == 0 and not _looks_like_a_row(value):  # e.g. a turn {"from": ..., "value": ...}
                self._false_start = first_abs
                return None
            if seg.error is not None:
                if exact:
                    return True
                seg.error = None
                self._false_start = first_abs
                return None
            yield row, value
            row += 1
            seg.n_rows = row
            pos = self.skip_ws(pos)
            if pos < len(self.buf) and self.buf[pos] == ",":
                pos = self.skip_ws(pos + 1)
            elif pos < len(self.buf) and self.buf[pos] != "]":
                if not exact:
                    self._false_start = first_abs
                    return None
                self.fail(pos, f"expected ',' or ']' after row {row - 1}", None)
                return True

    def element(self, pos: int, row: int) -> tuple[Any, int]:
        while True:
            more = not self.eof and len(self.buf) - pos < MAX_ROW_CHARS
            try:
                value, end = self.decoder.raw_decode(self.buf, pos)
            except json.JSONDecodeError as e:
                # The row may run past the window: read on. An error well before the window's end is real (more
                # text cannot change what came before it), except an unterminated string (reported at its start).
                near_end = e.pos >= len(self.buf) - 16
                if more and (near_end or e.msg.startswith("Unterminated string")):
                    pos = self.fill(pos)
                    continue
                if not self.eof:
                    self.fail(pos, f"not parseable within {MAX_ROW_CHARS >> 20} Mi characters (broken or "
                                   "oversized)", row)
                else:
                    self.fail(e.pos, e.msg, row)
                return None, pos
            except (RecursionError, ValueError) as e:
                end_or_none = _skip_value(self.buf, pos)
                if (end_or_none is None or end_or_none == len(self.buf)) and more:
                    pos = self.fill(pos)
                    continue
                if end_or_none is None:
                    self.fail(pos, "unterminated value", row)
                    return None, pos
                reason = "nested too deeply to parse" if isinstance(e, RecursionError) else str(e)
                line, col = self.where(pos)
                return Located(row, None, f"invalid JSON: {reason}", line, col), end_or_none
            if end == len(self.buf) and more:  # a number may continue in the next chunk
                pos = self.fill(pos)
                continue
            if self.dirty:
                bad = _SURROGATE.search(self.buf, pos, end)
                if bad:
                    line, col = self.where(bad.start())
                    byte = ord(bad.group()) - 0xDC00
                    return Located(row, _id_of(value), f"not valid UTF-8: byte 0x{byte:02x}", line, col), end
            return value, end


def _looks_like_a_row(value: Any) -> bool:
    """Where a speculative segment may start: an object with a row's keys and not a turn's. A row that is not
    (a bad row) only makes the segment's start disagree with the previous one's end — it is then re-read."""
    return isinstance(value, dict) and ("conversations" in value or "id" in value) and "from" not in value


def _skip_value(buf: str, pos: int) -> int | None:
    """End of the JSON value starting at ``pos`` (brackets matched, strings respected), or None if it runs past
    the window. Used only for values the recursive parser refuses."""
    if buf[pos] not in '[{"':
        m = _SCALAR.match(buf, pos)
        return m.end() if m else None
    depth = 0
    p = pos
    while p < len(buf):
        m = _TOKEN.match(buf, p)
        if m is None:  # an unterminated string
            return None
        tok = m.group()
        if tok[0] in "[{":
            depth += len(tok)
        elif tok[0] in "]}":
            if len(tok) >= depth:
                return m.start() + depth
            depth -= len(tok)
        p = m.end()
        if depth == 0:  # a top-level string
            return p
    return None


# ------------------------------------------------------------------------------------------------ entry points


def read_segment(path: str | Path, begin: int, end: int, *, exact: bool) -> tuple[Segment, Iterator[tuple[int, Any]]]:
    """Rows that start in bytes [begin, end): ``(local row, value | Located | Reset)``. The Segment is complete once
    the iterator is exhausted. ``begin == 0`` or ``exact``: ``begin`` is the file's start or a known row start."""
    path = Path(path)
    seg = Segment(begin, end)

    def rows() -> Iterator[tuple[int, Any]]:
        try:
            with open(path, "rb") as f:
                if path.suffix == ".jsonl":
                    yield from _jsonl(f, seg)
                else:
                    parser = _ArrayParser(f, seg, path)
                    yield from parser.rows(exact)
                    if parser.head < end:  # stopped early: count the rest of the range's newlines anyway
                        seg.newlines += count_newlines(f, parser.head, end)
        except OSError as e:
            raise PoolError(f"{path}: cannot read the pool file: {e.strerror or e}") from None

    return seg, rows()


class RowReader:
    """``for row, value in RowReader(path)``: the whole file in one pass; ``value`` is the decoded row or a
    :class:`PoolIssue`. ``bytes_read`` grows as the file is consumed (for progress bars)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.bytes_read = 0

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise PoolError(f"{self.path}: cannot read the pool file: {e.strerror or e}") from None
        seg, rows = read_segment(self.path, 0, max(size, 1), exact=True)
        for row, value in rows:
            yield row, (locate(value, 0, 0) if isinstance(value, Located) else value)
        raise_error(self.path, seg, 0, 0, 0)
        self.bytes_read = size


def count_newlines(f: IO[bytes], begin: int, end: int) -> int:
    f.seek(begin)
    n = 0
    while begin < end:
        data = f.read(min(CHUNK_BYTES, end - begin))
        if not data:
            break
        n += data.count(b"\n")
        begin += len(data)
    return n


def locate(issue: Located, row0: int, line0: int, col0: int = 0) -> PoolIssue:
    """A segment's issue as a pool issue: rows and lines shifted by what came before the segment (``line`` 0:
    the issue has no place in the file, e.g. a field's bad value)."""
    if issue.line == 0:
        return PoolIssue(issue.row + row0, issue.id, issue.reason)
    col = issue.col + (col0 if issue.line == 1 else 0)
    return PoolIssue(issue.row + row0, issue.id, f"{issue.reason} (line {issue.line + line0}, column {col})")


def raise_error(path: Path, seg: Segment, row0: int, line0: int, col0: int) -> None:
    if seg.error is None:
        return
    what, line, col, row = seg.error
    in_row = f" (row {row + row0})" if row is not None else ""
    col += col0 if line == 1 else 0
    raise PoolError(f"{path}: invalid JSON at line {line + line0}, column {col}{in_row}: {what}")


def column_offset(path: Path, offset: int) -> int:
    """Characters between the last newline before byte ``offset`` and it (a segment's column origin)."""
    if offset == 0:
        return 0
    with open(path, "rb") as f:
        back = min(offset, 1 << 20)
        f.seek(offset - back)
        data = f.read(back)
    return len(data[data.rfind(b"\n") + 1:].decode("utf-8", "replace"))

"""Reader and validator for the LLaVA instruction format (``llava_v1_5_mix665k.json`` and JSONL).

A row is ``{"id": ..., "image"?: "rel/path.jpg", "conversations": [{"from": "human"|"gpt", "value": str}, ...]}``.
Real files have quirks we accept: ids repeat (we mint stable unique ids), ``<image>`` can sit after the text in
the first human turn (we move it to the front, as LLaVA's ``preprocess_multimodal`` does), text-only rows have
no ``image``, conversations have many turns. Rows that cannot be used are reported with their index, id and
reason; ``strict=True`` raises instead of skipping.

This module says what a row means (:func:`parse_row`); ``selbench.pool.scan`` streams a file through it and checks
each unique image once, in worker processes, with an on-disk cache.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_str  # what json.dumps(str, ensure_ascii=False) uses
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from selbench.pool.errors import PoolError, PoolIssue, is_utf8, short_repr
from selbench.pool.images import confine

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["IMAGE_TOKEN", "ROLES", "PoolError", "PoolIssue", "PoolReport", "Sample", "parse_row", "read_pool"]

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_ROLE = {**ROLES, **{k.upper(): v for k, v in ROLES.items()}, **{k.title(): v for k, v in ROLES.items()}}


@dataclass(frozen=True)
class Sample:
    """One usable row, normalised. ``turns`` alternate user/assistant, the image tag removed."""

    row: int
    uid: str
    source_id: str
    image: str | None
    turns: tuple[tuple[str, str], ...]  # (role, text)
    image_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_image(self) -> bool:
        return self.image is not None


class _SampleView(Sequence[Sample]):
    """``PoolReport.samples`` of a streamed pool: built from the kept-row table on first access, so a caller that
    only wants the manifest (bounded memory at 665K rows) never makes 665K Python objects."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._items: list[Sample] | None = None

    def _list(self) -> list[Sample]:
        if self._items is None:
            cols = [self._table[c].to_pylist() for c in
                    ("row", "uid", "source_id", "image", "turns", "image_sha256", "extra")]
            self._items = [
                Sample(row, uid, sid, image, tuple((r, t) for r, t in json.loads(turns)), sha,
                       json.loads(extra) if extra else {})
                for row, uid, sid, image, turns, sha, extra in zip(*cols, strict=True)
            ]
        return self._items

    def __len__(self) -> int:
        return self._table.num_rows

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...
    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        return self._list()[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self._list() == list(other)

    def __repr__(self) -> str:
        return f"<{len(self)} samples>"


class PoolReport:
    """What reading a pool found: the kept rows (``samples``), every skipped row with its reason (``issues``,
    in row order) and, for streamed pools, the kept rows as a columnar ``table`` (what the manifest is built
    from) plus ``stats`` (rows, unique images, cache hits, workers, seconds per phase)."""

    def __init__(self, path: str, n_rows: int, samples: Sequence[Sample] | None = None,
                 issues: list[PoolIssue] | None = None, *, table: pa.Table | None = None,
                 image_root: Path | None = None, stats: dict[str, Any] | None = None) -> None:
        self.path = path
        self.n_rows = n_rows
        self.issues = list(issues or [])
        self.table = table
        self.image_root = image_root
        self.stats = stats or {}
        if samples is None:
            samples = _SampleView(table) if table is not None else []
        self.samples: Sequence[Sample] = samples

    @property
    def n_kept(self) -> int:
        return len(self.samples)

    def summary(self) -> str:
        reasons = Counter(i.reason.split(":")[0] for i in self.issues)
        parts = [f"{self.n_rows} rows, {self.n_kept} kept, {len(self.issues)} skipped"]
        parts += [f"  {n} × {r}" for r, n in reasons.most_common()]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"PoolReport({self.path!r}, {self.n_rows} rows, {self.n_kept} kept, {len(self.issues)} issues)"


# ------------------------------------------------------------------------------------------------ one row


class ParsedRow(NamedTuple):
    """A row that passed every check that needs no file system: what the manifest stores of it."""

    source_id: str
    image: str | None
    turns: str  # JSON of [[role, text], ...], ensure_ascii=False (the manifest's column, verbatim)
    n_turns: int
    skill: str | None
    extra: str | None  # JSON of the row's other keys, for ``Sample.extra``


_USER_NAMES = frozenset(k for k, v in _ROLE.items() if v == "user")
_ASSISTANT_NAMES = frozenset(k for k, v in _ROLE.items() if v == "assistant")
_ROLE_SEQ = ("user", "assistant") * 512


def _parse_turns(conv: Any, has_image: bool) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """Return the normalised turns, or an error reason. The hot path of pool reading: a row that is well formed
    is checked with a few C-level operations over all its turns; anything else goes turn by turn
    (``_parse_turns_slowly``), which finds the exact reason."""
    if not isinstance(conv, list) or not conv or len(conv) % 2 or len(conv) > len(_ROLE_SEQ):
        return _parse_turns_slowly(conv, has_image)
    try:
        froms = [t["from"] for t in conv]
        values = [t["value"] for t in conv]
        well_formed = _USER_NAMES.issuperset(froms[0::2]) and _ASSISTANT_NAMES.issuperset(froms[1::2])
    except (TypeError, KeyError):  # a turn that is not an object, lacks a key, or has an unhashable speaker
        return _parse_turns_slowly(conv, has_image)
    if not well_formed or not all(type(v) is str for v in values):
        return _parse_turns_slowly(conv, has_image)
    first = values[0]
    n_tags = first.count(IMAGE_TOKEN)
    if n_tags != has_image or any(IMAGE_TOKEN in v for v in values[1:]):
        return _parse_turns_slowly(conv, has_image)
    if n_tags:
        values[0] = first.replace(IMAGE_TOKEN, "")
    texts = [v.strip() for v in values]
    if not all(texts[1::2]):  # an empty answer
        return _parse_turns_slowly(conv, has_image)
    return tuple(zip(_ROLE_SEQ, texts, strict=False)), None


def _parse_turns_slowly(conv: Any, has_image: bool) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """Turn by turn: the normalised turns, or the first reason they cannot be used."""
    if not isinstance(conv, list) or not conv:
        return (), "conversations: missing or empty"
    turns: list[tuple[str, str]] = []
    n_tags = 0
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            return (), f"conversations[{t}]: needs 'from' and 'value'"
        speaker = turn["from"]
        role = ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            return (), f"conversations[{t}].from: unknown speaker {short_repr(speaker)}"
        value = turn["value"]
        if not isinstance(value, str):
            return (), f"conversations[{t}].value: not a string"
        expected = "user" if t % 2 == 0 else "assistant"
        if role != expected:
            return (), f"conversations[{t}].from: expected {expected} turn, got {short_repr(speaker)}"
        n_tags += value.count(IMAGE_TOKEN)
        if role == "user" and IMAGE_TOKEN in value:
            if t != 0:
                return (), f"conversations[{t}].value: {IMAGE_TOKEN} outside the first human turn"
            value = value.replace(IMAGE_TOKEN, "")
        turns.append((role, value.strip()))
    if turns[-1][0] != "assistant":
        return (), "conversations: last turn is not an answer"
    if any(not text for role, text in turns if role == "assistant"):
        return (), "conversations: empty answer"
    if has_image and n_tags != 1:
        return (), f"conversations: image row needs exactly one {IMAGE_TOKEN} tag, found {n_tags}"
    if not has_image and n_tags:
        return (), f"conversations: {IMAGE_TOKEN} tag in a row without an image"
    return tuple(turns), None




def turns_json(turns: tuple[tuple[str, str], ...]) -> str:
    """``json.dumps(turns, ensure_ascii=False)``, built directly (roles are fixed words; texts via the C
    string encoder json itself uses) — a third faster on the hot path, byte-identical."""
    return "[" + ", ".join([f'["{role}", {_json_str(text)}]' for role, text in turns]) + "]"


_EXTRA_SKIP = ("id", "image", "conversations")


def parse_row(rec: Any) -> ParsedRow | str:
    """Validate one decoded row: the row's fields, or the reason it cannot be used."""
    if not isinstance(rec, dict):
        return f"row: expected an object, got {type(rec).__name__}"
    sid = rec.get("id")
    if isinstance(sid, dict | list):
        return f"id: expected a string or a number, got {type(sid).__name__}"
    sid = None if sid is None else str(sid)
    if sid is None or sid == "":
        return "id: missing"
    image = rec.get("image")
    if image is not None:
        if not isinstance(image, str) or not image:
            return f"image: expected a relative path, got {short_repr(image)}"
        problem = confine(image)
        if problem:
            return problem
    turns, reason = _parse_turns(rec.get("conversations"), image is not None)
    if reason:
        return reason
    text = turns_json(turns)
    if not (is_utf8(text) and is_utf8(sid) and (image is None or is_utf8(image))):
        return "text: invalid Unicode (a lone surrogate such as \\ud800)"
    skill = rec.get("skill")
    if skill is not None and not (isinstance(skill, str) and is_utf8(skill)):
        skill = json.dumps(skill)  # the manifest's skill column holds text
    extra = {k: v for k, v in rec.items() if k not in _EXTRA_SKIP}
    return ParsedRow(sid, image, text, len(turns) // 2, skill, json.dumps(extra) if extra else None)


# ------------------------------------------------------------------------------------------------ a file


def read_pool(
    path: str | Path,
    images: str | Path | None = None,
    *,
    strict: bool = False,
    check_images: bool = True,
    decode_images: bool = False,
    workers: int | None = None,
    image_cache: str | Path | None = None,
    cache_rows: bool = True,
    progress: bool = True,
) -> PoolReport:
    """Read and validate a LLaVA-format pool (``.json`` list or ``.jsonl``), streaming it row by row.

    Unique ids: a source id that occurs once is kept; repeated ids become ``id::image#k`` where ``k`` counts
    earlier rows with the same (id, image) — stable as long as the file order is. Should a minted uid equal
    another row's (a row whose own id is ``x::a.png#0``), the later row gets ``~1`` (``~2`` …) appended: uids are
    unique by construction, and unchanged wherever there is no collision.

    Work: pools of 1 MiB and more are parsed in byte segments by ``workers`` processes (default: every usable
    CPU, at most 8; 1 = all in this process), which also check the images; the result does not depend on the
    number of workers. Memory stays bounded: rows become pyarrow columns as they are read (``report.table``);
    ``report.samples`` is built only when asked for.

    Images: each unique image is checked once — sha256 of its bytes, header and size, truncation
    (``decode_images=True``: a full decode) — see ``selbench.pool.images``.

    Caches (``image_cache``: a folder, or a ``.sqlite`` file whose folder is used): image checks keyed by
    (path, size, mtime), and — unless ``cache_rows=False`` — the pool's parsed rows keyed by the pool file's
    (path, size, mtime) and the parser's source (an Arrow file about the size of the pool's JSON), so a re-check
    of an unchanged pool only stats its images. ``check_images=False`` skips the file system (no sha256, no
    caches; paths are still confined to the image root). ``progress``: a bar with rows/s and ETA on a terminal.
    """
    from selbench.pool.scan import scan_pool

    report = scan_pool(path, images, check_images=check_images, decode_images=decode_images, workers=workers,
                       image_cache=image_cache, cache_rows=cache_rows, progress=progress)
    if strict and report.issues:
        issues = report.issues
        listed = "\n".join(f"  {i}" for i in issues[:50])
        more = f"\n  … and {len(issues) - 50} more" if len(issues) > 50 else ""
        raise PoolError(f"{report.path}: {len(issues)} bad rows (strict mode):\n{listed}{more}")
    return report

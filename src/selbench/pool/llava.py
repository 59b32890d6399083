"""Reader and validator for the LLaVA instruction format (``llava_v1_5_mix665k.json`` and JSONL).

A row is ``{"id": ..., "image"?: "rel/path.jpg", "conversations": [{"from": "human"|"gpt", "value": str}, ...]}``.
Real files have quirks we accept: ids repeat (we mint stable unique ids), ``<image>`` can sit after the text in
the first human turn (we move it to the front, as LLaVA's ``preprocess_multimodal`` does), text-only rows have
no ``image``, conversations have many turns. Rows that cannot be used are reported with their index, id and
reason; ``strict=True`` raises instead of skipping.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class PoolError(ValueError):
    """Raised for an unreadable pool file, or for any bad row when reading strictly."""


@dataclass(frozen=True)
class PoolIssue:
    row: int  # 0-based position in the file
    id: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (id={self.id!r}): {self.reason}"


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


@dataclass
class PoolReport:
    path: str
    n_rows: int
    samples: list[Sample]
    issues: list[PoolIssue]

    @property
    def n_kept(self) -> int:
        return len(self.samples)

    def summary(self) -> str:
        reasons = Counter(i.reason.split(":")[0] for i in self.issues)
        parts = [f"{self.n_rows} rows, {self.n_kept} kept, {len(self.issues)} skipped"]
        parts += [f"  {n} × {r}" for r, n in reasons.most_common()]
        return "\n".join(parts)


def _iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                yield i, PoolIssue(i, None, f"invalid JSON: {e.msg} (line {i + 1}, column {e.colno})")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PoolError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, list):
        raise PoolError(f"{path}: expected a JSON list of samples, got {type(data).__name__}")
    yield from enumerate(data)


def _parse_turns(conv: Any, has_image: bool) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """Return the normalised turns, or an error reason."""
    if not isinstance(conv, list) or not conv:
        return (), "conversations: missing or empty"
    turns: list[tuple[str, str]] = []
    n_tags = 0
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            return (), f"conversations[{t}]: needs 'from' and 'value'"
        role = ROLES.get(str(turn["from"]).lower())
        if role is None:
            return (), f"conversations[{t}].from: unknown speaker {turn['from']!r}"
        value = turn["value"]
        if not isinstance(value, str):
            return (), f"conversations[{t}].value: not a string"
        expected = "user" if t % 2 == 0 else "assistant"
        if role != expected:
            return (), f"conversations[{t}].from: expected {expected} turn, got {turn['from']!r}"
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


def _check_image(path: Path) -> tuple[str | None, str | None]:
    """Return (sha256 of the file, None) or (None, reason)."""
    if not path.is_file():
        return None, f"image: file not found: {path}"
    data = path.read_bytes()
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: truncated / corrupt files fail here, not later in training
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return None, f"image: cannot decode {path}: {e}"
    return hashlib.sha256(data).hexdigest(), None


def read_pool(
    path: str | Path,
    images: str | Path | None = None,
    *,
    strict: bool = False,
    check_images: bool = True,
) -> PoolReport:
    """Read and validate a LLaVA-format pool (``.json`` list or ``.jsonl``).

    Unique ids: a source id that occurs once is kept; repeated ids become ``id::image#k`` where ``k`` counts
    earlier rows with the same (id, image) — stable as long as the file order is.
    """
    path = Path(path)
    if not path.is_file():
        raise PoolError(f"pool file not found: {path}")
    image_root = Path(images) if images is not None else path.parent
    raw: list[tuple[int, Any]] = list(_iter_rows(path))
    id_counts = Counter(str(r.get("id")) for _, r in raw if isinstance(r, dict) and r.get("id") is not None)
    seen: Counter[tuple[str, str]] = Counter()
    samples: list[Sample] = []
    issues: list[PoolIssue] = []
    for row, rec in raw:
        if isinstance(rec, PoolIssue):
            issues.append(rec)
            continue
        if not isinstance(rec, dict):
            issues.append(PoolIssue(row, None, f"row: expected an object, got {type(rec).__name__}"))
            continue
        sid = rec.get("id")
        sid = None if sid is None else str(sid)
        if sid is None or sid == "":
            issues.append(PoolIssue(row, None, "id: missing"))
            continue
        image = rec.get("image")
        if image is not None and (not isinstance(image, str) or not image):
            issues.append(PoolIssue(row, sid, f"image: expected a relative path, got {image!r}"))
            continue
        turns, reason = _parse_turns(rec.get("conversations"), image is not None)
        if reason:
            issues.append(PoolIssue(row, sid, reason))
            continue
        sha = None
        if image is not None and check_images:
            sha, reason = _check_image(image_root / image)
            if reason:
                issues.append(PoolIssue(row, sid, reason))
                continue
        key = (sid, image or "-")
        if id_counts[sid] > 1:
            uid = f"{sid}::{image or '-'}#{seen[key]}"
        else:
            uid = sid
        seen[key] += 1
        extra = {k: v for k, v in rec.items() if k not in ("id", "image", "conversations")}
        samples.append(Sample(row, uid, sid, image, turns, sha, extra))
    report = PoolReport(str(path), len(raw), samples, issues)
    if strict and issues:
        listed = "\n".join(f"  {i}" for i in issues[:50])
        more = f"\n  … and {len(issues) - 50} more" if len(issues) > 50 else ""
        raise PoolError(f"{path}: {len(issues)} bad rows (strict mode):\n{listed}{more}")
    return report

"""The pool layer's two ways of saying "bad input": a per-row issue (skipped and recorded) or a PoolError (the
file as a whole cannot be used). Both carry a message meant for the person who owns the pool — never a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class PoolError(ValueError):
    """Raised for an unreadable pool file, or for any bad row when reading strictly."""


@dataclass(frozen=True)
class PoolIssue:
    row: int  # 0-based position in the file (JSON list: element; JSONL: line)
    id: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (id={self.id!r}): {self.reason}"


def short_repr(value: object, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: messages quote bad values, never megabytes of them."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_utf8(text: str) -> bool:
    """False for text that cannot be stored as UTF-8: a lone surrogate, whether from a JSON escape such as
    ``\\ud800`` or left by ``surrogateescape`` for a byte that failed to decode."""
    if text.isascii():  # a flag on the string object: O(1)
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
